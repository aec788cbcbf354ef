package io.github.lora4j.benchmarks.report;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class MarkdownReportTest {

    @TempDir
    Path dir;

    private String md;

    @BeforeEach
    void render() throws IOException {
        md = MarkdownReport.render(Fixture.load(dir), "overhead.svg");
    }

    private static void assertContains(String text, String expected) {
        assertTrue(text.contains(expected), "expected the report to contain\n  " + expected + "\nbut it was:\n" + text);
    }

    // The fixture's times carry JMH errors of 2 % of the mean (0.5 % for 1024 × 1024, n = 1), so a ratio a/b has
    // the range [a(1 − e)/(b(1 + e)), a(1 + e)/(b(1 − e))]; plain+alloc at 4096, n = 64 has a second fork at 12,900.

    @Test
    void forwardRowsShowMediansRatiosWithRangesTheoryAndVerdicts() {
        // 4096, n = 1: merged/plain+alloc 4050/4010 in [0.970, 1.051] straddles 1.02; unmerged/merged 4100/4050
        assertContains(md, "| 4096 | 4096 | 8 | 1 | 4,000.0 | 4,010.0 | 4,050.0 | 4,100.0 | 1.010 [0.970, 1.051] | "
                + "within noise | 1.012 [0.973, 1.054] | +0.39 % | ≤ 1.05 | within noise |");
        // 1024, n = 1 (0.5 %): merged/plain+alloc 262/260 in [0.998, 1.018] <= 1.02; unmerged/merged 320/262 in
        // [1.209, 1.234], all above 1.15, and 1.221 is 6.2 % above it
        assertContains(md, "| 1024 | 1024 | 8 | 1 | 250.0 | 260.0 | 262.0 | 320.0 | 1.008 [0.998, 1.018] | PASS | "
                + "1.221 [1.209, 1.234] | +1.56 % | ≤ 1.15 | MISS (+6.2 %) |");
        // 1024, n = 64: the issue sets no unmerged target there
        assertContains(md, "| 1024 | 1024 | 8 | 64 | 800.0 | 810.0 | 815.0 | 900.0 | 1.006 [0.967, 1.047] | "
                + "within noise | 1.104 [1.061, 1.149] | +1.56 % | — | — |");
    }

    @Test
    void theMergedColumnSaysWhatItDividesBy() {
        assertContains(md, "| merged / plain+alloc | verdict (≤ 1.02) |");
        assertContains(md, "is what `merged / plain+alloc` divides by");
        assertContains(md, MarkdownReport.INTERVALS);
    }

    @Test
    void aSecondForkWidensTheRangeOfEveryRatioItEnters() {
        // plain+alloc: 12,520 ± 2 % = [12,269.6, 12,770.4] widened to 12,900 -> merged/plain+alloc high 13,056/12,269.6
        // = 1.064, low 12,544/12,900 = 0.972
        assertContains(md, "| 4096 | 4096 | 8 | 64 | 12,500.0 | 12,520.0 | 12,800.0 | 13,000.0 | 1.022 [0.972, 1.064] | "
                + "within noise | 1.016 [0.976, 1.057] | +0.39 % | ≤ 1.05 | within noise |");
        assertContains(md, "| 4096 | 4096 | 8 | 64 | 30,000.0 | 12,520.0 | 2.396 [2.279, 2.494] |");
    }

    @Test
    void runToRunVarianceListsEachForksMedian() {
        assertContains(md, "## Run-to-run variance (forks)");
        // 12,900 / 12,520 − 1 = 3.04 %
        assertContains(md, "| ForwardBenchmark.plainAllocating | batch = 64, in = 4096, out = 4096 | 12,520.0 | "
                + "12,520.0, 12,900.0 | 3.0 % |");
        assertFalse(md.contains("| ForwardBenchmark.merged |"), "one-fork results are not listed");
    }

    @Test
    void theRankIndependentMergedVerdictIsShownForEveryRankButCountedOnce() {
        assertContains(md, "| 4096 | 4096 | 64 | 64 | 12,500.0 | 12,520.0 | 12,800.0 | 14,000.0 | 1.022 [0.972, 1.064] | "
                + "within noise | 1.094 [1.051, 1.138] | +3.13 % | — | — |");
        assertContains(md, "| 1024 | 1024 | 64 | 1 | 250.0 | 260.0 | 262.0 | — | 1.008 [0.998, 1.018] | PASS | — | "
                + "+12.50 % | — | — |");
    }

    @Test
    void mergeRowsCompareEachModeWithTheReferenceGemm() {
        // EXACT merge 2800/2000 in [1.345, 1.457] <= 1.5; EXACT unmerge 3200/2000 in [1.537, 1.665], all above 1.5
        assertContains(md, "| 4096 | 4096 | 8 | EXACT | 2,800.0 | 3,200.0 | 2,000.0 | 2,000.0 | 1.400 [1.345, 1.457] | "
                + "PASS | 1.600 [1.537, 1.665] | MISS (+6.7 %) |");
        assertContains(md, "| 4096 | 4096 | 8 | FAST | 2,050.0 | 2,100.0 | 2,000.0 | 2,000.0 | 1.025 [0.985, 1.067] | "
                + "PASS | 1.050 [1.009, 1.093] | PASS |");
    }

    @Test
    void exactVsFastShowsTimeRatioAndRecordSize() {
        assertContains(md, "| 4096 | 4096 | 8 | 3,200.0 | 2,100.0 | 1.524 [1.464, 1.586] | 1.00 % | 83,886 (0.50 %) | "
                + "4.0 KiB | 64.0 MiB | 0.006 % |");
    }

    @Test
    void mixedBatchRatioIsJudgedAgainstOnePointThree() {
        assertContains(md, "| 4096 | 4096 | 8 | 13,000.0 | 15,600.0 | 13,500.0 | 1.200 [1.153, 1.249] | "
                + "1.038 [0.998, 1.081] | PASS |");
    }

    @Test
    void summaryCountsEveryVerdict() {
        // PASS: merged/plain 1024 n=1, merge EXACT, merge FAST, unmerge FAST, mixed; MISS: unmerged 1024 n=1,
        // unmerge EXACT; within noise: merged/plain 1024 n=64, 4096 n=1 and n=64, unmerged 4096 n=1 and n=64.
        // The r = 64 rows repeat the merged verdicts without counting them again.
        assertContains(md, "**Targets: 5 PASS, 2 MISS, 5 within noise.**");
    }

    @Test
    void environmentAndChartAreIncluded() {
        assertContains(md, "| nd4j blas.vendor | OPENBLAS |");
        assertContains(md, "| ND4J maxMasterThreads | 2 |");
        assertContains(md, "![unmerged / merged vs batch size](overhead.svg)");
    }

    @Test
    void sectionsWithoutDataAreLeftOut() throws IOException {
        ReportData forwardOnly = ReportData.of(Map.of(), List.of(), Fixture.forwardOnly(dir));
        String text = MarkdownReport.render(forwardOnly, null);
        assertContains(text, "## Forward");
        assertFalse(text.contains("## Merge"), text);
        assertFalse(text.contains("## Mixed"), text);
        assertFalse(text.contains("!["), text);
        assertContains(text, "(not recorded)");
    }
}
