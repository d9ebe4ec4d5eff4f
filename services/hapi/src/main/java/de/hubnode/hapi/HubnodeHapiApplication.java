package de.hubnode.hapi;

import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.ImportAutoConfiguration;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.boot.autoconfigure.context.PropertyPlaceholderAutoConfiguration;
import org.springframework.boot.autoconfigure.web.embedded.EmbeddedWebServerFactoryCustomizerAutoConfiguration;
import org.springframework.boot.autoconfigure.web.servlet.ServletWebServerFactoryAutoConfiguration;

/**
 * Entry point of the hubnode FHIR store: a HAPI FHIR JPA R4 server in one executable jar.
 *
 * <p>Exists so a node can run HAPI FHIR built from Maven Central artifacts without the much larger
 * upstream starter project. Spring Boot's classpath-driven auto-configuration is switched off
 * ({@code spring.boot.enableautoconfiguration=false} in {@code application.properties}) because HAPI
 * drags JPA, Quartz, Thymeleaf, Elasticsearch, Spring MVC and more onto the classpath; letting Boot
 * configure all of that would slow start-up and compete with HAPI's own configuration classes. Only
 * the embedded servlet container is auto-configured (listed below); everything else is wired
 * explicitly by the configuration classes in this package.
 */
@SpringBootApplication
@ImportAutoConfiguration({
	PropertyPlaceholderAutoConfiguration.class,
	ServletWebServerFactoryAutoConfiguration.class,
	EmbeddedWebServerFactoryCustomizerAutoConfiguration.class
})
public class HubnodeHapiApplication {

	public static void main(String[] args) {
		SpringApplication.run(HubnodeHapiApplication.class, args);
	}
}
