package io.github.lora4j;

import java.io.IOException;
import java.io.InputStream;
import java.util.Properties;

/**
 * Facts about the lora4j build on the class path. Adapter and trainer-state files record {@link #version()} as
 * provenance; nothing reads it back to decide anything.
 */
public final class Lora4j {

    private static final String POM_PROPERTIES = "/META-INF/maven/io.github.lora4j/lora-core/pom.properties";

    private static volatile String version;

    private Lora4j() {
    }

    /**
     * lora4j's version: the {@code version} of lora-core's Maven descriptor in its jar, else the jar manifest's
     * {@code Implementation-Version}, else {@code "dev"} (running from a build's classes).
     *
     * @return the version, for example {@code "0.2.0"}; never {@code null}
     */
    public static String version() {
        String v = version;
        if (v == null) {
            v = lookUp();
            version = v;
        }
        return v;
    }

    private static String lookUp() {
        try (InputStream in = Lora4j.class.getResourceAsStream(POM_PROPERTIES)) {
            if (in != null) {
                Properties p = new Properties();
                p.load(in);
                String v = p.getProperty("version");
                if (v != null && !v.isBlank()) {
                    return v;
                }
            }
        } catch (IOException e) {
            // fall through: the version is provenance only
        }
        String v = Lora4j.class.getPackage() == null ? null : Lora4j.class.getPackage().getImplementationVersion();
        return v == null || v.isBlank() ? "dev" : v;
    }
}
