package de.hubnode.hapi;

import ca.uhn.fhir.batch2.jobs.config.Batch2JobsConfig;
import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.api.config.ThreadPoolFactoryConfig;
import ca.uhn.fhir.jpa.batch2.JpaBatch2Config;
import ca.uhn.fhir.jpa.config.HapiJpaConfig;
import ca.uhn.fhir.jpa.config.r4.JpaR4Config;
import ca.uhn.fhir.jpa.config.util.HapiEntityManagerFactoryUtil;
import ca.uhn.fhir.jpa.model.config.PartitionSettings;
import ca.uhn.fhir.jpa.subscription.channel.config.SubscriptionChannelConfig;
import de.hubnode.hapi.DatabaseConfig.DatabaseSettings;
import jakarta.persistence.EntityManagerFactory;
import java.util.Properties;
import javax.sql.DataSource;
import org.springframework.beans.factory.config.ConfigurableListableBeanFactory;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.context.annotation.Import;
import org.springframework.context.annotation.Primary;
import org.springframework.orm.jpa.JpaTransactionManager;
import org.springframework.orm.jpa.LocalContainerEntityManagerFactoryBean;

/**
 * Wires HAPI FHIR's JPA storage layer for FHIR R4: imports HAPI's own Spring configuration and
 * supplies the few beans HAPI expects the host application to provide (storage settings,
 * partition settings, entity manager factory, transaction manager).
 *
 * <p>Exists so the storage behaviour the node relies on is stated in one place: client-assigned
 * ids via PUT, referential integrity, no stale search-result reuse, schema auto-update.
 */
@Configuration
@Import({
	JpaR4Config.class, // R4 FhirContext, DAOs, resource providers, JpaConfig
	HapiJpaConfig.class, // paging provider, stale-search cleanup, resource counts
	JpaBatch2Config.class, // batch2 job persistence (reindex after SearchParameter changes etc.)
	Batch2JobsConfig.class, // batch2 job definitions
	// In-memory message broker; batch2 sends its work notifications through it. Despite the package
	// name this does not enable FHIR Subscriptions.
	SubscriptionChannelConfig.class,
	ThreadPoolFactoryConfig.class
})
public class FhirJpaConfig {

	@Bean
	public JpaStorageSettings storageSettings() {
		JpaStorageSettings s = new JpaStorageSettings();
		// Client-assigned ids via PUT (e.g. Patient/mii-exa-test-data-patient-1). ANY also accepts purely
		// numeric ids, so resources copied from another server (HAPI assigns numeric ids) keep their ids;
		// HAPI then requires server-assigned ids (POST) to be UUIDs so the two can never collide.
		s.setResourceClientIdStrategy(JpaStorageSettings.ClientIdStrategyEnum.ANY);
		s.setResourceServerIdStrategy(JpaStorageSettings.IdStrategyEnum.UUID);
		// Keep HAPI's default: a reference to a resource that neither exists nor is created in the same
		// transaction is rejected (HTTP 400). The MII core data set test bundles are self-contained and
		// load with this on.
		s.setEnforceReferentialIntegrityOnWrite(true);
		// A search must see data written a moment ago (tests write, then search); HAPI's default would
		// answer an identical search from a cached result for up to 60 s.
		s.setReuseCachedSearchResultsForMillis(null);
		return s;
	}

	@Bean
	public PartitionSettings partitionSettings() {
		return new PartitionSettings();
	}

	@Bean
	@Primary
	public LocalContainerEntityManagerFactoryBean entityManagerFactory(
			ConfigurableListableBeanFactory beanFactory,
			FhirContext fhirContext,
			JpaStorageSettings storageSettings,
			DataSource dataSource,
			DatabaseSettings db) {
		LocalContainerEntityManagerFactoryBean emf =
				HapiEntityManagerFactoryUtil.newEntityManagerFactory(beanFactory, fhirContext, storageSettings);
		emf.setPersistenceUnitName("HAPI_PU");
		emf.setDataSource(dataSource);
		Properties p = new Properties();
		p.put("hibernate.dialect", db.dialect());
		// Create the schema on first start and add missing tables/columns on upgrades.
		p.put("hibernate.hbm2ddl.auto", "update");
		p.put("hibernate.format_sql", "false");
		p.put("hibernate.show_sql", "false");
		p.put("hibernate.cache.use_query_cache", "false");
		p.put("hibernate.cache.use_second_level_cache", "false");
		p.put("hibernate.cache.use_structured_entries", "false");
		p.put("hibernate.cache.use_minimal_puts", "false");
		// No Lucene/Elasticsearch full-text indexing.
		p.put("hibernate.search.enabled", "false");
		// Entities are listed by HAPI; skip Hibernate's classpath scanning.
		p.put("hibernate.archive.scanner", "org.hibernate.boot.archive.scan.internal.DisabledScanner");
		emf.setJpaProperties(p);
		return emf;
	}

	@Bean
	@Primary
	public JpaTransactionManager transactionManager(EntityManagerFactory entityManagerFactory) {
		return new JpaTransactionManager(entityManagerFactory);
	}
}
