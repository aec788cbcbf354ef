package io.github.lora4j.examples;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.examples.RankSweep.Row;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.factory.Nd4j;

/** Runs the rank sweep small (16 × 16, k = 2, ranks 1..4) and checks the numbers it reports. */
class RankSweepTest {

    private static final RankSweep.Settings SMALL = new RankSweep.Settings(16, 2, 0.02, 4, 800, 0.03, 2024);
    private static RankSweep.Result result;

    @BeforeAll
    static void runSmallSweep() {
        result = RankSweep.run(SMALL);
    }

    @Test
    void singularValuesOfACOrderMatrixAreRight() {
        // [[3, 0], [4, 5]]: AᵀA = [[25, 20], [20, 25]] has eigenvalues 45 and 5.
        double[] s = RankSweep.singularValues(Nd4j.createFromArray(new double[][] {{3, 0}, {4, 5}}));
        assertArrayEquals(new double[] {Math.sqrt(45), Math.sqrt(5)}, s, 1e-12);
    }

    @Test
    void lowRankTargetHasTheDesignedSpectrum() {
        double[] s = result.lowRank().singularValues();
        assertEquals(16, s.length);
        // σ = k, ..., 1 perturbed by noise of 2 % of ‖ΔW‖_F = sqrt(5): at most 0.045 in any direction.
        assertEquals(2.0, s[0], 0.05);
        assertEquals(1.0, s[1], 0.05);
        assertTrue(s[2] < 0.05, "noise directions must be small, got " + s[2]);
    }

    @Test
    void loraReachesTheEckartYoungBoundWithinFivePercentOnceItsRankSuffices() {
        for (Row row : result.lowRank().rows()) {
            assertTrue(row.error() >= row.bound() * (1 - 1e-6),
                    "no rank-" + row.rank() + " matrix beats the bound: " + row);
            if (row.rank() >= SMALL.trueRank()) {
                assertTrue(row.ratio() <= 1.05, "rank " + row.rank() + " must come within 5 % of the bound: " + row);
            }
        }
    }

    @Test
    void errorFallsWithRankUpToTheTrueRankThenSitsAtTheNoiseFloor() {
        List<Row> rows = result.lowRank().rows();
        for (int i = 1; i < SMALL.trueRank(); i++) {
            assertTrue(rows.get(i).error() < rows.get(i - 1).error(), "error must fall from rank " + i + " to "
                    + (i + 1) + ": " + rows.get(i - 1) + " then " + rows.get(i));
        }
        Row atK = rows.get(SMALL.trueRank() - 1);
        assertTrue(rows.get(0).error() > 0.4, "rank 1 misses σ₂ = 1 of ‖ΔW‖ ≈ √5: " + rows.get(0));
        assertTrue(atK.error() < 1.05 * SMALL.noise(), "rank k leaves only the noise: " + atK);
    }

    @Test
    void aFullRankUpdateStaysFarFromTheTargetAtEveryRank() {
        for (Row row : result.fullRank().rows()) {
            assertTrue(row.ratio() <= 1.05 && row.ratio() >= 1 - 1e-6, "LoRA still reaches the bound: " + row);
            assertTrue(row.error() > 0.55, "a flat spectrum cannot be captured by rank " + row.rank() + ": " + row);
        }
        double[] s = result.fullRank().singularValues();
        assertTrue(s[15] > 0.01 * s[0], "the full-rank target must have no negligible direction");
    }

    @Test
    void chartAndTableAreWritten(@TempDir Path dir) throws Exception {
        Path png = dir.resolve("sweep/rank-sweep.png");
        RankSweep.writeChart(result, png);
        byte[] bytes = Files.readAllBytes(png);
        assertTrue(bytes.length > 10_000, "chart too small: " + bytes.length + " bytes");
        assertArrayEquals(new byte[] {(byte) 0x89, 'P', 'N', 'G'}, java.util.Arrays.copyOf(bytes, 4));
        String table = RankSweep.table(result);
        assertEquals(2 * (2 + SMALL.maxRank()) + 2, table.lines().count(), table);
        assertTrue(table.contains("Eckart-Young bound"), table);
    }
}
