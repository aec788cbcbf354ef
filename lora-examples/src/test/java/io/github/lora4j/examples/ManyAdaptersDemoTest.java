package io.github.lora4j.examples;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.examples.ManyAdaptersDemo.Point;
import io.github.lora4j.examples.ManyAdaptersDemo.Result;
import io.github.lora4j.examples.ManyAdaptersDemo.Settings;
import io.github.lora4j.io.PeftAdapterFiles;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.stream.Stream;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Runs the demo small (40 adapters over 2 × [16, 16], K = 1, 4, 40) and checks what it reports and writes. */
class ManyAdaptersDemoTest {

    private static final Settings SMALL = new Settings(16, 2, 40, 8, 6, 60, 1.0, 40, new int[] {1, 4, 40}, 3, 7);
    private static final long ADAPTER_BYTES = 4L * 2 * 4 * 16;   // r·(in + out) floats in each of two modules

    @TempDir
    static Path adapters;
    private static Result result;

    @BeforeAll
    static void runSmall() throws Exception {
        result = ManyAdaptersDemo.run(SMALL, adapters);
    }

    @Test
    void everyAdapterIsSavedAsAPeftDirectory() throws Exception {
        try (Stream<Path> dirs = Files.list(adapters)) {
            assertEquals(SMALL.adapters(), dirs.filter(d -> Files.isRegularFile(d.resolve(PeftAdapterFiles.MODEL_FILE))
                    && Files.isRegularFile(d.resolve(PeftAdapterFiles.CONFIG_FILE))).count());
        }
    }

    @Test
    void theStreamStaysWithinTheBudgetAndItsCountsAddUp() {
        ManyAdaptersDemo.Stream st = result.stream();
        assertEquals(SMALL.streamBatches(), st.batches());
        assertEquals((long) SMALL.streamBatches() * SMALL.streamRows(), st.rows());
        assertEquals(st.rows(), st.stats().rowHits() + st.stats().rowMisses(), "every row is a hit or a miss");
        assertEquals(SMALL.streamBatches(), st.stats().batches());
        assertTrue(st.maxResident() <= SMALL.streamBudget(), "at most the budget resident: " + st);
        assertTrue(st.maxResidentBytes() <= SMALL.streamBudget() * ADAPTER_BYTES, "bytes within the budget: " + st);
        assertEquals(SMALL.streamBudget(), st.maxResident(), "the stream names more adapters than fit, so it fills "
                + "the budget: " + st);
        assertTrue(st.distinctNamed() > SMALL.streamBudget(), "the stream must need eviction: " + st);
        // Each miss is one load; every adapter named is loaded at least once; loads beyond that needed evictions.
        assertEquals(st.stats().misses(), st.stats().loads());
        assertTrue(st.stats().loads() >= st.distinctNamed());
        assertEquals(st.stats().loads() - st.stats().residentAdapters(), st.stats().evictions(),
                "every load not resident at the end was evicted for room");
        double hit = st.stats().hitRate();
        assertTrue(hit > 0 && hit < 1, "Zipf over 40 with room for 8: some hits, some misses, got " + hit);
        assertTrue(st.rowsPerSecond() > 0 && Double.isFinite(st.rowsPerSecond()));
    }

    @Test
    void theSweepHasOnePointPerKWithThatManyAdaptersPinned() {
        assertArrayEquals(SMALL.ks(), result.sweep().stream().mapToInt(Point::k).toArray());
        for (Point p : result.sweep()) {
            assertTrue(p.mixedMillis() > 0 && p.singleMillis() > 0, p.toString());
            assertEquals(p.mixedMillis() / p.singleMillis(), p.ratio(), 1e-12);
        }
    }

    @Test
    void theReportAndTheChartAreWritten(@TempDir Path out) throws Exception {
        String report = ManyAdaptersDemo.report(result);
        assertTrue(report.contains("rows/s"), report);
        for (int k : SMALL.ks()) {
            assertTrue(report.lines().anyMatch(l -> l.trim().startsWith(k + " ")), "a row for K = " + k + ":\n"
                    + report);
        }
        Path png = out.resolve("charts/many-adapters.png");
        ManyAdaptersDemo.writeChart(result, png);
        byte[] bytes = Files.readAllBytes(png);
        assertTrue(bytes.length > 2_000, "a real picture, got " + bytes.length + " bytes");
        assertArrayEquals(new byte[] {(byte) 0x89, 'P', 'N', 'G'}, Arrays.copyOf(bytes, 4));
        try (Stream<Path> left = Files.list(png.getParent())) {
            assertEquals(1, left.count(), "no temporary file left beside the chart");
        }
    }

    @Test
    void badSettingsAreRefusedNamingThem() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> new Settings(16, 2, 40, 8, 6, 60, 1.0, 40, new int[] {4, 1}, 3, 7));
        assertTrue(e.getMessage().contains("ascending") && e.getMessage().contains("[4, 1]"), e.getMessage());
        assertThrows(IllegalArgumentException.class,
                () -> new Settings(16, 32, 40, 8, 6, 60, 1.0, 40, new int[] {1}, 3, 7));
    }
}
