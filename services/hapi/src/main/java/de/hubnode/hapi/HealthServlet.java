package de.hubnode.hapi;

import jakarta.servlet.http.HttpServlet;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.sql.Connection;
import javax.sql.DataSource;
import org.springframework.boot.context.event.ApplicationReadyEvent;
import org.springframework.context.event.EventListener;
import org.springframework.stereotype.Component;

/**
 * {@code GET /health}: HTTP 200 {@code {"status":"UP"}} once the application (and with it the FHIR
 * servlet) has started and the database answers; otherwise HTTP 503 {@code {"status":"DOWN"}}.
 *
 * <p>Exists so container health checks and the provisioning code have a cheap readiness probe
 * without pulling in Spring Boot Actuator and Spring MVC (both slow start-up noticeably).
 */
@Component
public class HealthServlet extends HttpServlet {

	private static final long serialVersionUID = 1L;

	private final transient DataSource dataSource;
	private volatile boolean started;

	public HealthServlet(DataSource dataSource) {
		this.dataSource = dataSource;
	}

	@EventListener(ApplicationReadyEvent.class)
	public void onReady() {
		started = true;
	}

	@Override
	protected void doGet(HttpServletRequest req, HttpServletResponse resp) throws IOException {
		boolean up = started && databaseAnswers();
		resp.setStatus(up ? HttpServletResponse.SC_OK : HttpServletResponse.SC_SERVICE_UNAVAILABLE);
		resp.setContentType("application/json");
		resp.setHeader("Cache-Control", "no-store");
		resp.getOutputStream().write((up ? "{\"status\":\"UP\"}" : "{\"status\":\"DOWN\"}").getBytes(StandardCharsets.UTF_8));
	}

	private boolean databaseAnswers() {
		try (Connection c = dataSource.getConnection()) {
			return c.isValid(2);
		} catch (Exception e) {
			return false;
		}
	}
}
