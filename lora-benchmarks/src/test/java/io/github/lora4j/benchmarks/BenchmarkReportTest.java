package io.github.lora4j.benchmarks;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import io.github.lora4j.LoraLinear;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class BenchmarkReportTest {

    @TempDir
    Path dir;

    @Test
    void fromJsonRerendersMarkdownAndChartWithoutRunningJmh() throws Exception {
        Path json = dir.resolve("in.json");
        try (InputStream in = getClass().getResourceAsStream("/sample-report.json")) {
            Files.copy(in, json);
        }
        Path out = dir.resolve("out");
        BenchmarkReport.main(new String[] {"--from-json", json.toString(), "--out", out.toString()});
        String md = Files.readString(out.resolve("report.md"), StandardCharsets.UTF_8);
        assertTrue(md.startsWith("# lora4j benchmark report"), md);
        assertTrue(md.contains("**Targets: 9 PASS, 3 MISS.**"), md);
        assertTrue(Files.size(out.resolve("overhead.svg")) > 0);
        assertTrue(Files.size(out.resolve("overhead.png")) > 0);
    }

    @Test
    void inexactElementsAreThoseWhoseRoundTripLosesBits() {
        // Δ = s·B·A with s = 2 (alpha = 2r), B = [[1], [0]], A = [[0.5, 0.5]]: row 0 gets +1, row 1 nothing.
        INDArray w = Nd4j.createFromArray(new float[][] {{1e-8f, 3f}, {5f, 7f}});
        LoraLinear layer = LoraLinear.wrap(w, null, Fixtures.config(1));
        layer.setAdapterWeights(LoraLinear.DEFAULT_ADAPTER, Nd4j.createFromArray(new float[][] {{0.5f, 0.5f}}),
                Nd4j.createFromArray(new float[][] {{1f}, {0f}}));
        // fl(fl(1e-8 + 1) − 1) = 0 ≠ 1e-8; fl(fl(3 + 1) − 1) = 3; row 1 is unchanged.
        assertEquals(1, BenchmarkReport.inexactElements(layer));
        layer.setAdapterWeights(LoraLinear.DEFAULT_ADAPTER, Nd4j.createFromArray(new float[][] {{0.5f, 0.5f}}),
                Nd4j.createFromArray(new float[][] {{0f}, {0f}}));
        assertEquals(0, BenchmarkReport.inexactElements(layer));
    }

    @Test
    void optionsAreParsedByName() {
        assertEquals(Map.of("profile", "full", "out", "x"), BenchmarkReport.parse(new String[] {"--profile", "full", "--out", "x"}));
    }

    @Test
    void unknownOrIncompleteArgumentsAreRefusedWithWhatWasExpected() {
        IllegalArgumentException unknown = assertThrows(IllegalArgumentException.class,
                () -> BenchmarkReport.parse(new String[] {"--fast"}));
        assertTrue(unknown.getMessage().contains("'--fast'") && unknown.getMessage().contains("--profile"),
                unknown.getMessage());
        IllegalArgumentException missing = assertThrows(IllegalArgumentException.class,
                () -> BenchmarkReport.parse(new String[] {"--out"}));
        assertTrue(missing.getMessage().contains("--out"), missing.getMessage());
        IllegalArgumentException both = assertThrows(IllegalArgumentException.class,
                () -> BenchmarkReport.parse(new String[] {"--from-json", "a.json", "--profile", "quick"}));
        assertTrue(both.getMessage().contains("--from-json"), both.getMessage());
    }

    @Test
    void profilesAreKnownByName() {
        assertEquals("quick", io.github.lora4j.benchmarks.report.Profile.named("QUICK").name());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> io.github.lora4j.benchmarks.report.Profile.named("medium"));
        assertTrue(e.getMessage().contains("'medium'"), e.getMessage());
    }
}
