package io.github.lora4j.benchmarks.report;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.OptionalDouble;
import org.junit.jupiter.api.Test;

class TargetsTest {

    @Test
    void aRatioEqualToItsTargetPasses() {
        assertEquals("PASS", Targets.verdict(1.02, Targets.MERGED_OVER_PLAIN));
        assertTrue(Targets.meets(1.5, Targets.MERGE_OVER_GEMM));
    }

    @Test
    void aMissSaysByHowMuch() {
        assertEquals("MISS (+10.0 %)", Targets.verdict(1.65, 1.5));
        assertFalse(Targets.meets(1.0201, Targets.MERGED_OVER_PLAIN));
    }

    @Test
    void aMissingRatioIsNeitherPassNorMiss() {
        assertEquals("—", Targets.verdict(Double.NaN, 1.3));
        assertFalse(Targets.meets(Double.NaN, 1.3));
    }

    @Test
    void unmergedTargetsApplyOnlyWhereTheIssueSetsThem() {
        for (int n : new int[] {1, 8, 64, 512}) {
            assertEquals(OptionalDouble.of(1.05), Targets.unmergedOverMerged(4096, 4096, 8, n));
        }
        assertEquals(OptionalDouble.of(1.15), Targets.unmergedOverMerged(1024, 1024, 8, 1));
        assertEquals(OptionalDouble.empty(), Targets.unmergedOverMerged(1024, 1024, 8, 64));
        assertEquals(OptionalDouble.empty(), Targets.unmergedOverMerged(4096, 4096, 64, 1));
        assertEquals(OptionalDouble.empty(), Targets.unmergedOverMerged(4096, 11008, 8, 1), "none for non-square");
    }

    @Test
    void anIntervalEntirelyAtOrBelowTheTargetPasses() {
        assertEquals("PASS", Targets.verdict(new Interval(1.00, 0.98, 1.02), 1.02));
    }

    @Test
    void anIntervalEntirelyAboveTheTargetMissesByTheValuesDistance() {
        // value 1.221 is 6.2 % above 1.15; the whole range [1.209, 1.234] lies above it
        assertEquals("MISS (+6.2 %)", Targets.verdict(new Interval(1.221, 1.209, 1.234), 1.15));
    }

    @Test
    void anIntervalAroundTheTargetIsWithinNoiseWhicheverSideTheValueIsOn() {
        assertEquals(Targets.WITHIN_NOISE, Targets.verdict(new Interval(1.03, 0.99, 1.07), 1.05));
        assertEquals(Targets.WITHIN_NOISE, Targets.verdict(new Interval(1.07, 1.03, 1.11), 1.05));
        assertEquals(Targets.WITHIN_NOISE, Targets.verdict(new Interval(1.05, 1.05, 1.06), 1.05),
                "low equal to the target is not above it");
    }

    @Test
    void aMissingRatioIntervalIsNeitherAndAnIntervalWithoutEndsFallsBackToTheValue() {
        assertEquals("—", Targets.verdict(new Interval(Double.NaN, Double.NaN, Double.NaN), 1.3));
        assertEquals("PASS", Targets.verdict(new Interval(1.2, Double.NaN, Double.NaN), 1.3));
        assertEquals("MISS (+10.0 %)", Targets.verdict(new Interval(1.43, Double.NaN, Double.NaN), 1.3));
    }

    @Test
    void theoreticalExtraCostIsRankTimesInPlusOutOverInTimesOut() {
        assertEquals(8.0 * 8192 / (4096.0 * 4096), Targets.theoreticalExtraCost(8, 4096, 4096), 1e-15);
        assertEquals(0.0156250, Targets.theoreticalExtraCost(8, 1024, 1024), 1e-12);
        assertEquals(64.0 * 3072 / (1024.0 * 2048), Targets.theoreticalExtraCost(64, 1024, 2048), 1e-15);
    }
}
