package io.github.lora4j.benchmarks.report;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class ReportDataTest {

    @TempDir
    Path dir;

    @Test
    void medianIsJmhsFiftiethPercentileNotTheMean() throws IOException {
        ReportData data = Fixture.load(dir);
        Measurement m = data.find("ForwardBenchmark.merged", "size", "4096", "batch", "64").orElseThrow();
        assertEquals(12800.0, m.medianUs(), 1e-9);
        assertEquals(12800.0 * 1.05, m.meanUs(), 1e-6);
        assertEquals(100, m.samples(), "samples summed over the histogram buckets");
    }

    @Test
    void parametersSelectTheRightMeasurement() throws IOException {
        ReportData data = Fixture.load(dir);
        assertEquals(28, data.measurements().size());
        assertEquals(3200.0, data.median("MergeBenchmark.unmerge", "size", "4096", "rank", "8", "mode", "EXACT"), 1e-9);
        assertEquals(2100.0, data.median("MergeBenchmark.unmerge", "size", "4096", "rank", "8", "mode", "FAST"), 1e-9);
        assertTrue(Double.isNaN(data.median("ForwardBenchmark.merged", "size", "2048")), "absent shape gives NaN");
        assertEquals(List.of(1024, 4096), data.values("ForwardBenchmark.plain", "size"));
        assertEquals(List.of(1, 64), data.values("ForwardBenchmark.unmerged", "batch"));
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
