package de.hubnode.hapi;

import com.zaxxer.hikari.HikariConfig;
import com.zaxxer.hikari.HikariDataSource;
import io.micrometer.core.instrument.MeterRegistry;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;
import javax.sql.DataSource;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.core.env.Environment;

/**
 * Turns the node's environment-variable contract into a JDBC connection pool and the matching
 * Hibernate dialect.
 *
 * <p>Exists because the provisioning code configures this service only through these variables:
 * {@code HAPI_DB} ({@code h2} default, or {@code postgres}), {@code HAPI_H2_PATH},
 * {@code HAPI_DB_URL}, {@code HAPI_DB_USER}, {@code HAPI_DB_PASSWORD_FILE} (secret as a file) and
 * the developer fallback {@code HAPI_DB_PASSWORD}.
 */
@Configuration(proxyBeanMethods = false)
public class DatabaseConfig {

	private static final Logger LOG = LoggerFactory.getLogger(DatabaseConfig.class);

	static final String DEFAULT_H2_PATH = "/var/lib/hapi/h2/hapi";
	static final String H2_DIALECT = "ca.uhn.fhir.jpa.model.dialect.HapiFhirH2Dialect";
	static final String POSTGRES_DIALECT = "ca.uhn.fhir.jpa.model.dialect.HapiFhirPostgresDialect";

	/** The resolved database choice: JDBC settings plus the HAPI Hibernate dialect to use. */
	public record DatabaseSettings(String kind, String url, String user, String password, String dialect) {}

	@Bean
	public DatabaseSettings databaseSettings(Environment env) {
		String kind = env.getProperty("HAPI_DB", "h2").trim().toLowerCase(Locale.ROOT);
		switch (kind) {
			case "h2": {
				String path = env.getProperty("HAPI_H2_PATH", DEFAULT_H2_PATH).trim();
				// DB_CLOSE_ON_EXIT=FALSE: let Spring close the pool (and so the database) on shutdown,
				// instead of H2's own shutdown hook racing it.
				String url = "jdbc:h2:file:" + path + ";DB_CLOSE_ON_EXIT=FALSE";
				return new DatabaseSettings(kind, url, "sa", "", H2_DIALECT);
			}
			case "postgres":
			case "postgresql": {
				String url = required(env, "HAPI_DB_URL");
				String user = required(env, "HAPI_DB_USER");
				return new DatabaseSettings("postgres", url, user, password(env), POSTGRES_DIALECT);
			}
			default:
				throw new IllegalStateException("HAPI_DB must be 'h2' or 'postgres', not '" + kind + "'");
		}
	}

	@Bean(destroyMethod = "close")
	public DataSource dataSource(DatabaseSettings db, MeterRegistry meters) {
		HikariConfig cfg = new HikariConfig();
		cfg.setPoolName("hapi-db");
		cfg.setJdbcUrl(db.url());
		cfg.setUsername(db.user());
		cfg.setPassword(db.password());
		cfg.setDriverClassName("h2".equals(db.kind()) ? "org.h2.Driver" : "org.postgresql.Driver");
		// HAPI may hold more than one connection per request (search coordinator, nested transactions).
		cfg.setMaximumPoolSize(10);
		cfg.setMinimumIdle(2);
		cfg.setAutoCommit(false);
		// hikaricp_connections_* by pool (see MetricsConfig).
		cfg.setMetricRegistry(meters);
		LOG.info("Database: {} at {}", db.kind(), db.url());
		return new HikariDataSource(cfg);
	}

	private static String required(Environment env, String name) {
		String value = env.getProperty(name);
		if (value == null || value.isBlank()) {
			throw new IllegalStateException(name + " must be set when HAPI_DB=postgres");
		}
		return value.trim();
	}

	/** Password from the file named by HAPI_DB_PASSWORD_FILE, else HAPI_DB_PASSWORD, else empty. */
	private static String password(Environment env) {
		String file = env.getProperty("HAPI_DB_PASSWORD_FILE");
		if (file != null && !file.isBlank()) {
			try {
				return Files.readString(Path.of(file.trim())).strip();
			} catch (IOException e) {
				throw new IllegalStateException("Cannot read HAPI_DB_PASSWORD_FILE " + file + ": " + e.getMessage(), e);
			}
		}
		return env.getProperty("HAPI_DB_PASSWORD", "");
	}
}
