package de.hubnode.hapi;

import ca.uhn.fhir.rest.server.RestfulServer;
import io.micrometer.core.instrument.Tags;
import io.micrometer.core.instrument.binder.jvm.ClassLoaderMetrics;
import io.micrometer.core.instrument.binder.jvm.JvmGcMetrics;
import io.micrometer.core.instrument.binder.jvm.JvmInfoMetrics;
import io.micrometer.core.instrument.binder.jvm.JvmMemoryMetrics;
import io.micrometer.core.instrument.binder.jvm.JvmThreadMetrics;
import io.micrometer.core.instrument.binder.system.FileDescriptorMetrics;
import io.micrometer.core.instrument.binder.system.ProcessorMetrics;
import io.micrometer.core.instrument.binder.system.UptimeMetrics;
import io.micrometer.core.instrument.binder.tomcat.TomcatMetrics;
import io.micrometer.prometheusmetrics.PrometheusConfig;
import io.micrometer.prometheusmetrics.PrometheusMeterRegistry;
import org.springframework.boot.context.event.ApplicationStartedEvent;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.context.event.EventListener;

/**
 * The Prometheus registry and what it measures: JVM (memory, GC, threads, classes), process (CPU,
 * uptime, open files), Tomcat (threads, connections, requests), the HikariCP pool (bound in
 * {@link DatabaseConfig}) and FHIR requests ({@link FhirRequestMetrics}).
 *
 * <p>Exists to wire Micrometer's maintained binders directly; Spring Boot Actuator would need Spring
 * MVC, which this server leaves out for start-up time.
 */
@Configuration(proxyBeanMethods = false)
public class MetricsConfig {

	@Bean(destroyMethod = "close")
	public PrometheusMeterRegistry meterRegistry() {
		PrometheusMeterRegistry registry = new PrometheusMeterRegistry(PrometheusConfig.DEFAULT);
		new ClassLoaderMetrics().bindTo(registry);
		new JvmMemoryMetrics().bindTo(registry);
		new JvmThreadMetrics().bindTo(registry);
		new JvmInfoMetrics().bindTo(registry);
		new ProcessorMetrics().bindTo(registry);
		new UptimeMetrics().bindTo(registry);
		new FileDescriptorMetrics().bindTo(registry);
		return registry;
	}

	/** Listens for GC notifications until shutdown. */
	@Bean(destroyMethod = "close")
	public JvmGcMetrics jvmGcMetrics(PrometheusMeterRegistry registry) {
		JvmGcMetrics gc = new JvmGcMetrics();
		gc.bindTo(registry);
		return gc;
	}

	@Bean
	public FhirRequestMetrics fhirRequestMetrics(PrometheusMeterRegistry registry, RestfulServer fhirServer) {
		FhirRequestMetrics metrics = new FhirRequestMetrics(registry, fhirServer.getFhirContext());
		fhirServer.registerInterceptor(metrics);
		return metrics;
	}

	/**
	 * Tomcat's figures come from its JMX beans ({@code server.tomcat.mbeanregistry.enabled=true}),
	 * which exist once the web server has started.
	 */
	@EventListener(ApplicationStartedEvent.class)
	public void bindTomcat(ApplicationStartedEvent event) {
		PrometheusMeterRegistry registry = event.getApplicationContext().getBean(PrometheusMeterRegistry.class);
		new TomcatMetrics(null, Tags.empty()).bindTo(registry);
	}
}
