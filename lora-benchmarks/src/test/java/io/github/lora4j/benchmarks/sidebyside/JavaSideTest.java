package io.github.lora4j.benchmarks.sidebyside;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/** lora4j's side of the side-by-side grid, run once at tiny shapes (no timing is asserted, only what is measured). */
class JavaSideTest {

    @Test
    void everyTargetIsMeasuredAndMergesOnlyWhereTheScriptMeasuresThem() {
        Map<String, Timing.Stats> n1 = JavaSide.measure(64, 8, 1, 0.001);
        assertEquals(List.of("plain", "merged", "unmerged", "step", "step_nodx", "merge_exact", "merge_fast"),
                List.copyOf(n1.keySet()));
        for (Map.Entry<String, Timing.Stats> e : n1.entrySet()) {
            Timing.Stats s = e.getValue();
            assertTrue(s.calls() >= 5 && s.medianMs() > 0 && s.p25Ms() <= s.medianMs() && s.medianMs() <= s.p75Ms(),
                    e.getKey() + ": " + s);
        }
        assertEquals(List.of("plain", "merged", "unmerged", "step", "step_nodx"),
                List.copyOf(JavaSide.measure(128, 8, 4, 0.001).keySet()), "no merges at n > 1 unless d = 64");
    }
}
