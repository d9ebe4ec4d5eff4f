package de.hubnode.hapi;

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import io.micrometer.prometheusmetrics.PrometheusMeterRegistry;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.context.SmartLifecycle;
import org.springframework.core.env.Environment;
import org.springframework.stereotype.Component;

/**
 * {@code GET /metrics} in Prometheus' text format on its own port ({@code HAPI_METRICS_PORT}, default
 * 8090), and nothing else on that port.
 *
 * <p>Exists so metrics are never reachable through the FHIR port: whatever can reach FHIR (the
 * connector, a gateway route) cannot reach metrics by accident. The JDK's own HTTP server keeps this
 * apart from Tomcat and costs no extra library.
 */
@Component
public class MetricsServer implements SmartLifecycle {

	private static final Logger LOG = LoggerFactory.getLogger(MetricsServer.class);
	static final int DEFAULT_PORT = 8090;
	private static final String CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

	private final PrometheusMeterRegistry registry;
	private final int port;
	private volatile HttpServer server;

	public MetricsServer(PrometheusMeterRegistry registry, Environment env) {
		this.registry = registry;
		this.port = port(env.getProperty("HAPI_METRICS_PORT"));
	}

	static int port(String value) {
		if (value == null || value.isBlank()) {
			return DEFAULT_PORT;
		}
		try {
			int port = Integer.parseInt(value.trim());
			if (port >= 1 && port <= 65535) {
				return port;
			}
		} catch (NumberFormatException e) {
			// reported below
		}
		throw new IllegalStateException("HAPI_METRICS_PORT must be a port number (1-65535), not '" + value + "'");
	}

	@Override
	public void start() {
		try {
			HttpServer http = HttpServer.create(new InetSocketAddress(port), 0);
			http.createContext("/", this::handle);
			http.start();
			server = http;
			LOG.info("Metrics at http://0.0.0.0:{}/metrics", port);
		} catch (IOException e) {
			throw new IllegalStateException("Cannot listen on HAPI_METRICS_PORT " + port + ": " + e.getMessage(), e);
		}
	}

	@Override
	public void stop() {
		HttpServer http = server;
		if (http != null) {
			http.stop(0);
			server = null;
		}
	}

	@Override
	public boolean isRunning() {
		return server != null;
	}

	private void handle(HttpExchange exchange) throws IOException {
		try (exchange) {
			if (!"/metrics".equals(exchange.getRequestURI().getPath())) {
				exchange.sendResponseHeaders(404, -1);
				return;
			}
			String method = exchange.getRequestMethod();
			if (!"GET".equals(method) && !"HEAD".equals(method)) {
				exchange.getResponseHeaders().set("Allow", "GET, HEAD");
				exchange.sendResponseHeaders(405, -1);
				return;
			}
			byte[] body = registry.scrape().getBytes(StandardCharsets.UTF_8);
			exchange.getResponseHeaders().set("Content-Type", CONTENT_TYPE);
			exchange.getResponseHeaders().set("Cache-Control", "no-store");
			if ("HEAD".equals(method)) {
				exchange.sendResponseHeaders(200, -1);
				return;
			}
			exchange.sendResponseHeaders(200, body.length);
			try (OutputStream out = exchange.getResponseBody()) {
				out.write(body);
			}
		}
	}
}
