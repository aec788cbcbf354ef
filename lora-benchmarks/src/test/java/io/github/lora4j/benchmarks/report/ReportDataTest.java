package io.github.lora4j.benchmarks.report;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class ReportDataTest {

    @TempDir
    Path dir;

    @Test
    void medianIsJmhsFiftiethPercentileNotTheMean() throws IOException {
        ReportData data = Fixture.load(dir);
        Measurement m = data.find("ForwardBenchmark.merged", "in", "4096", "out", "4096", "batch", "64").orElseThrow();
        assertEquals(12800.0, m.medianUs(), 1e-9);
        assertEquals(12800.0 * 1.05, m.meanUs(), 1e-6);
        assertEquals(100, m.samples(), "samples summed over the histogram buckets");
    }

    @Test
    void parametersSelectTheRightMeasurement() throws IOException {
        ReportData data = Fixture.load(dir);
        assertEquals(28, data.measurements().size());
        assertEquals(3200.0, data.median("MergeBenchmark.unmerge", "in", "4096", "rank", "8", "mode", "EXACT"), 1e-9);
        assertEquals(2100.0, data.median("MergeBenchmark.unmerge", "out", "4096", "rank", "8", "mode", "FAST"), 1e-9);
        assertTrue(Double.isNaN(data.median("ForwardBenchmark.merged", "in", "2048")), "absent shape gives NaN");
        assertEquals(List.of(1024, 4096), data.values("ForwardBenchmark.plain", "in"));
        assertEquals(List.of(1, 64), data.values("ForwardBenchmark.unmerged", "batch"));
    }

    @Test
    void anOlderResultsSizeIsReadAsInEqualsOut() throws IOException {
        ReportData data = Fixture.load(dir);
        Measurement m = data.find("ForwardBenchmark.unmerged", "in", "4096", "out", "4096", "rank", "8", "batch", "1")
                .orElseThrow();
        assertEquals(Map.of("batch", "1", "rank", "8", "in", "4096", "out", "4096"), m.params());
        assertEquals(List.of(4096), data.memory().stream().map(ExactMergeMemory::out).toList());
        assertEquals(List.of(4096), data.memory().stream().map(ExactMergeMemory::in).toList());
    }

    @Test
    void shapesAreDistinctAndOrderedBySize() throws IOException {
        ReportData data = Fixture.load(dir);
        assertEquals(List.of("1024x1024", "4096x4096"),
                data.shapes("ForwardBenchmark.").stream().map(s -> s[0] + "x" + s[1]).toList());
        assertEquals(List.of("4096x4096"), data.shapes("MergeBenchmark").stream().map(s -> s[0] + "x" + s[1]).toList());
    }

    @Test
    void eachForkGetsItsOwnMedianFromItsHistogram() throws IOException {
        ReportData data = Fixture.load(dir);
        // fork 1: 50 × 12,520 and 50 × 13,772 -> lower median 12,520; fork 2: 51 × 12,900 and 49 × 14,190 -> 12,900
        Measurement twoForks = data.find("ForwardBenchmark.plainAllocating", "in", "4096", "batch", "64").orElseThrow();
        assertEquals(List.of(12520.0, 12900.0), twoForks.forkMediansUs());
        assertEquals(200, twoForks.samples());
        assertEquals(1, data.find("ForwardBenchmark.plain", "in", "4096", "batch", "64").orElseThrow()
                .forkMediansUs().size());
    }

    @Test
    void theWeightedMedianIsTheLowerMedian() {
        TreeMap<Double, Long> counts = new TreeMap<>(Map.of(1.0, 2L, 5.0, 2L));
        assertEquals(1.0, ReportData.weightedMedian(counts), "an even split gives the lower value");
        counts.put(9.0, 1L);
        assertEquals(5.0, ReportData.weightedMedian(counts), "1, 1, 5, 5, 9 -> 5");
        assertThrows(IllegalArgumentException.class, () -> ReportData.weightedMedian(new TreeMap<>()));
    }

    @Test
    void environmentAndMemorySurviveAWriteReadRoundTrip() throws IOException {
        ReportData data = Fixture.load(dir);
        Path copy = dir.resolve("copy.json");
        data.write(copy);
        ReportData again = ReportData.read(copy);
        assertEquals(data.environment(), again.environment());
        assertEquals(data.memory(), again.memory());
        assertEquals(data.measurements(), again.measurements());
        assertEquals("OPENBLAS", again.environment().get("nd4j blas.vendor"));
    }

    @Test
    void aBareJmhArrayIsAccepted() throws IOException {
        ReportData data = Fixture.load(dir);
        Path bare = dir.resolve("bare.json");
        Files.writeString(bare, data.jmh().toString());
        ReportData read = ReportData.read(bare);
        assertEquals(data.measurements(), read.measurements());
        assertTrue(read.environment().isEmpty());
        assertTrue(read.memory().isEmpty());
    }

    @Test
    void aFileWithoutJmhResultsIsRefusedWithAReason() throws IOException {
        Path bad = dir.resolve("bad.json");
        Files.writeString(bad, "{\"environment\": {}}");
        IOException e = assertThrows(IOException.class, () -> ReportData.read(bad));
        assertTrue(e.getMessage().contains("\"jmh\" array"), e.getMessage());
    }

    @Test
    void timeUnitsConvertToMicroseconds() {
        assertEquals(1000.0, ReportData.microsPer("ms/op"), 0);
        assertEquals(0.001, ReportData.microsPer("ns/op"), 0);
        assertEquals(1.0, ReportData.microsPer("us/op"), 0);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> ReportData.microsPer("ops/s"));
        assertTrue(e.getMessage().contains("ops/s"), e.getMessage());
    }
}
