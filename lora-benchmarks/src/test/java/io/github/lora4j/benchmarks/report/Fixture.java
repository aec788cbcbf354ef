package io.github.lora4j.benchmarks.report;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;

/** The fixed JMH-like report in test resources, copied where a test needs a file. */
final class Fixture {

    private Fixture() {
    }

    /** Copies {@code sample-report.json} into {@code dir} and returns the copy. */
    static Path copyTo(Path dir) throws IOException {
        Path target = dir.resolve("sample-report.json");
        try (InputStream in = Fixture.class.getResourceAsStream("/sample-report.json")) {
            if (in == null) {
                throw new IOException("test resource /sample-report.json is missing");
            }
            Files.copy(in, target, StandardCopyOption.REPLACE_EXISTING);
        }
        return target;
    }

    /** The fixture's JMH results of {@code ForwardBenchmark} only. */
    static com.fasterxml.jackson.databind.node.ArrayNode forwardOnly(Path dir) throws IOException {
        return only(dir, "ForwardBenchmark");
    }

    /** The fixture's JMH results whose benchmark class is {@code simpleClassName}. */
    static com.fasterxml.jackson.databind.node.ArrayNode only(Path dir, String simpleClassName) throws IOException {
        com.fasterxml.jackson.databind.node.ArrayNode all = load(dir).jmh();
        com.fasterxml.jackson.databind.node.ArrayNode out = all.arrayNode();
        for (com.fasterxml.jackson.databind.JsonNode r : all) {
            if (r.path("benchmark").asText().contains("." + simpleClassName + ".")) {
                out.add(r);
            }
        }
        return out;
    }

    /** The fixture, parsed. */
    static ReportData load(Path dir) throws IOException {
        return ReportData.read(copyTo(dir));
    }
}
