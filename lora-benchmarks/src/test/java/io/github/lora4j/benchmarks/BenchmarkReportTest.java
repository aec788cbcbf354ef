package io.github.lora4j.benchmarks;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import io.github.lora4j.benchmarks.report.Profile;
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
        assertTrue(md.contains("**Targets: 5 PASS, 2 MISS, 5 within noise.**"), md);
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
    void helpIsAnOptionOfItsOwn() {
        assertEquals(Map.of("help", ""), BenchmarkReport.parse(new String[] {"--profile", "full", "--help"}));
        assertEquals(Map.of("help", ""), BenchmarkReport.parse(new String[] {"-h"}));
        for (String option : List.of("--profile", "--shape", "--include", "--out", "--from-json", "--help")) {
            assertTrue(BenchmarkReport.USAGE.contains(option), "usage should name " + option);
        }
    }

    @Test
    void shapesAreInTimesOutPairs() {
        List<int[]> shapes = BenchmarkReport.shapes("4096x11008, 1024×1024");
        assertEquals(List.of("4096/11008", "1024/1024"), shapes.stream().map(s -> s[0] + "/" + s[1]).toList());
        Map<String, String> opts = BenchmarkReport.parse(new String[] {"--shape", "4096x11008", "--include", "Forward"});
        assertEquals("4096x11008", opts.get("shape"));
    }

    @Test
    void badValuesAreRefusedBeforeAnythingRuns() {
        Map<String[], String> cases = new java.util.LinkedHashMap<>();
        cases.put(new String[] {"--shape", "4096"}, "--shape: expected INxOUT pairs such as 4096x11008, got '4096'");
        cases.put(new String[] {"--shape", "0x8"}, "--shape: expected IN in 1..65536, got '0' in '0x8'");
        cases.put(new String[] {"--shape", "8xabc"}, "--shape: expected OUT in 1..65536, got 'abc' in '8xabc'");
        cases.put(new String[] {"--profile", "medium"}, "profile: expected quick or full, got 'medium'");
        cases.put(new String[] {"--include", "Forward("}, "--include: expected a regular expression, got 'Forward('");
        cases.put(new String[] {"--from-json", "a.json", "--shape", "8x8"}, "--from-json re-renders a stored result");
        cases.forEach((args, expected) -> {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> BenchmarkReport.parse(args));
            assertTrue(e.getMessage().contains(expected), "expected\n  " + expected + "\ngot\n  " + e.getMessage());
        });
    }

    @Test
    void profilesRunTheSquareShapesUnlessToldOtherwise() {
        Profile quick = Profile.named("quick");
        assertEquals(List.of("1024x1024", "4096x4096"), quick.shapes().stream().map(s -> s[0] + "x" + s[1]).toList());
        Profile mine = quick.withShapes(BenchmarkReport.shapes("4096x11008"));
        assertEquals(List.of("4096x11008"), mine.shapes().stream().map(s -> s[0] + "x" + s[1]).toList());
        assertTrue(mine.describe().contains("(in, out) ∈ {(4096, 11008)}"), mine.describe());
        assertTrue(mine.describe().contains("2 for ForwardBenchmark"), mine.describe());
    }

    @Test
    void profilesAreKnownByName() {
        assertEquals("quick", io.github.lora4j.benchmarks.report.Profile.named("QUICK").name());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> io.github.lora4j.benchmarks.report.Profile.named("medium"));
        assertTrue(e.getMessage().contains("'medium'"), e.getMessage());
    }
}
