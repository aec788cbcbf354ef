package io.github.lora4j.examples;

import java.net.URISyntaxException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.CodeSource;

/**
 * The one folder every example writes to: {@code lora-examples/target/examples/}, wherever the example is started
 * from (the project root, the module's folder, an IDE).
 *
 * <p>Resolved in this order: the system property {@value #PROPERTY} (the exec plugin sets it to the module's
 * {@code target/examples}); else the {@code target} folder the example's classes were loaded from
 * ({@code target/classes} or a jar in {@code target}), plus {@code examples}; else {@code lora-examples/target/examples}
 * when the working directory is the project root, and {@code target/examples} otherwise.
 */
public final class ExampleOutput {

    /** System property naming the output folder. */
    public static final String PROPERTY = "lora4j.examples.out";

    private ExampleOutput() {
    }

    /**
     * The output folder (not created).
     *
     * @return the folder, absolute
     */
    public static Path directory() {
        return resolve(System.getProperty(PROPERTY), codeLocation(), Path.of("").toAbsolutePath());
    }

    /**
     * A file in the output folder (the folder is not created).
     *
     * @param name the file name, e.g. {@code rank-sweep.png}
     * @return {@code directory().resolve(name)}
     */
    public static Path file(String name) {
        return directory().resolve(name);
    }

    /**
     * The rule of {@link #directory()}, on explicit inputs.
     *
     * @param property     the system property's value, or null
     * @param codeLocation where the classes were loaded from ({@code .../target/classes} or a jar), or null
     * @param workingDir   the working directory, absolute
     * @return the folder, absolute
     */
    static Path resolve(String property, Path codeLocation, Path workingDir) {
        if (property != null && !property.isBlank()) {
            return workingDir.resolve(property).toAbsolutePath().normalize();
        }
        if (codeLocation != null) {
            Path target = codeLocation.getParent();
            if (target != null && target.getFileName() != null && target.getFileName().toString().equals("target")) {
                return target.resolve("examples").toAbsolutePath().normalize();
            }
        }
        Path module = workingDir.resolve("lora-examples");
        Path base = Files.isDirectory(module) ? module : workingDir;
        return base.resolve("target").resolve("examples").toAbsolutePath().normalize();
    }

    private static Path codeLocation() {
        try {
            CodeSource source = ExampleOutput.class.getProtectionDomain().getCodeSource();
            return source == null || source.getLocation() == null ? null : Path.of(source.getLocation().toURI());
        } catch (URISyntaxException | SecurityException | IllegalArgumentException e) {
            return null; // an unusual class loader: fall back to the working directory
        }
    }
}
