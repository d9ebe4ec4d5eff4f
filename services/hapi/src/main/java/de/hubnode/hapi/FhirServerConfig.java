package de.hubnode.hapi;

import ca.uhn.fhir.context.support.IValidationSupport;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.api.dao.IFhirSystemDao;
import ca.uhn.fhir.jpa.provider.JpaCapabilityStatementProvider;
import ca.uhn.fhir.jpa.provider.JpaSystemProvider;
import ca.uhn.fhir.jpa.search.DatabaseBackedPagingProvider;
import ca.uhn.fhir.rest.api.EncodingEnum;
import ca.uhn.fhir.rest.server.IncomingRequestAddressStrategy;
import ca.uhn.fhir.rest.server.RestfulServer;
import ca.uhn.fhir.rest.server.provider.ResourceProviderFactory;
import ca.uhn.fhir.rest.server.util.ISearchParamRegistry;
import org.springframework.beans.factory.annotation.Qualifier;
import org.springframework.boot.web.servlet.ServletRegistrationBean;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;

/**
 * Builds the HAPI FHIR RESTful server (the servlet answering FHIR REST calls) on top of the JPA
 * storage layer and mounts it at {@code /fhir/*}.
 *
 * <p>Exists to choose which HAPI providers are exposed: all R4 resource types (read, search,
 * create, conditional create/update, history), the system-level endpoint for transaction and batch
 * bundles, and the JPA-aware CapabilityStatement at {@code /fhir/metadata}. Nothing else (no tester
 * UI, no subscriptions, no OpenAPI).
 */
@Configuration
public class FhirServerConfig {

	@Bean
	public RestfulServer fhirServer(
			IFhirSystemDao<?, ?> systemDao,
			ResourceProviderFactory resourceProviders,
			@Qualifier("mySystemProviderR4") JpaSystemProvider<?, ?> systemProvider,
			JpaStorageSettings storageSettings,
			ISearchParamRegistry searchParamRegistry,
			IValidationSupport validationSupport,
			DatabaseBackedPagingProvider pagingProvider) {
		RestfulServer server = new RestfulServer(systemDao.getContext());
		server.registerProviders(resourceProviders.createProviders());
		server.registerProvider(systemProvider);
		JpaCapabilityStatementProvider capabilities = new JpaCapabilityStatementProvider(
				server, systemDao, storageSettings, searchParamRegistry, validationSupport);
		capabilities.setImplementationDescription("hubnode HAPI FHIR R4 server");
		server.setServerConformanceProvider(capabilities);
		server.setPagingProvider(pagingProvider);
		server.setDefaultResponseEncoding(EncodingEnum.JSON);
		server.setServerAddressStrategy(new IncomingRequestAddressStrategy());
		return server;
	}

	@Bean
	public ServletRegistrationBean<RestfulServer> fhirServletRegistration(RestfulServer fhirServer) {
		ServletRegistrationBean<RestfulServer> reg = new ServletRegistrationBean<>(fhirServer, "/fhir/*");
		reg.setName("fhir");
		reg.setLoadOnStartup(1);
		return reg;
	}

	@Bean
	public ServletRegistrationBean<HealthServlet> healthServletRegistration(HealthServlet health) {
		ServletRegistrationBean<HealthServlet> reg = new ServletRegistrationBean<>(health, "/health");
		reg.setName("health");
		reg.setLoadOnStartup(2);
		return reg;
	}
}
