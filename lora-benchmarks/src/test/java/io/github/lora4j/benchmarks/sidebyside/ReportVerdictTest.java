package io.github.lora4j.benchmarks.sidebyside;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * The side-by-side verdicts use issue 10's own limits (1.0 for the hot path and FAST, 2.0 for EXACT) and say when
 * the rounds disagree instead of picking the kinder one.
 */
class ReportVerdictTest {

    @Test
    void theLimitsAreTheIssues() {
        assertEquals(1.0, Report.limit("plain"));
        assertEquals(1.0, Report.limit("step"));
        assertEquals(1.0, Report.limit("step_nodx"));
        assertEquals(1.0, Report.limit("merge_fast"));
        assertEquals(2.0, Report.limit("merge_exact"));
    }

    @Test
    void aVerdictReadsEveryRound() {
        assertEquals(Report.Verdict.PASS, Report.verdict(0.90, 0.92, 0.99, 1.0));
        assertEquals(Report.Verdict.PASS, Report.verdict(1.00, 1.00, 1.00, 1.0));
        assertEquals(Report.Verdict.MISS, Report.verdict(1.05, 1.06, 1.30, 1.0));
        // One round met it, the other did not: noise decides, and the report says so.
        assertEquals(Report.Verdict.NOISE, Report.verdict(0.97, 0.98, 1.08, 1.0));
        assertEquals(Report.Verdict.NOISE, Report.verdict(1.02, 0.99, 1.04, 1.0));
        // The better medians of each side can meet it while no single round does.
        assertEquals(Report.Verdict.NOISE, Report.verdict(0.99, 1.01, 1.03, 1.0));
    }

    @Test
    void theReportCountsAndLabelsTheVerdicts() {
        List<SideBySide.Result> results = new ArrayList<>();
        for (int round = 1; round <= 2; round++) {
            // forward: 0.9x in both rounds (PASS); step: 1.2x and 1.3x (MISS by 20 %); EXACT vs addmm_: 1.9x and 2.1x.
            add(results, round, "plain", 0.9, 1.0);
            add(results, round, "step", round == 1 ? 1.2 : 1.3, 1.0);
            add(results, round, "merge_exact", round == 1 ? 1.9 : 2.1, 1.0);
            add(results, round, "merge_pair", Double.NaN, 1.0);
        }
        String md = Report.markdown(results, List.of("test"), 2, 1.0, "--test");
        assertTrue(md.contains("0.90 (0.90–0.90) PASS"), md);
        assertTrue(md.contains("1.20 (1.20–1.30) **MISS** (+20 %)"), md);
        assertTrue(md.contains("1.90 (1.90–2.10) within noise"), md);
        assertTrue(md.contains("1 PASS, 1 MISS, 1 within noise."), md);
    }

    private static void add(List<SideBySide.Result> results, int round, String target, double javaMs, double torchMs) {
        if (!Double.isNaN(javaMs)) {
            results.add(new SideBySide.Result("lora4j", round, 256, 8, 1, target, new Timing.Stats(javaMs, javaMs, javaMs, 10)));
        }
        if (!target.startsWith("merge_") || target.equals("merge_pair")) {
            results.add(new SideBySide.Result("torch", round, 256, 8, 1, target, new Timing.Stats(torchMs, torchMs, torchMs, 10)));
        }
    }
}
