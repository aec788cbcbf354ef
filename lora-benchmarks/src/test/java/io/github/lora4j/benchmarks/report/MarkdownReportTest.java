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

    @Test
    void forwardRowsShowMediansRatiosTheoryAndVerdicts() {
        // 4096, n = 1: merged/plain+alloc = 4050/4010, unmerged/merged = 4100/4050, theory 8·8192/4096² = 0.39 %
        assertContains(md, "| 4096 | 8 | 1 | 4,000.0 | 4,010.0 | 4,050.0 | 4,100.0 | 1.010 | PASS | 1.012 | +0.39 % | ≤ 1.05 | PASS |");
        // 4096, n = 64: merged/plain+alloc = 12800/12520 = 1.0224 > 1.02
        assertContains(md, "| 4096 | 8 | 64 | 12,500.0 | 12,520.0 | 12,800.0 | 13,000.0 | 1.022 | MISS (+0.2 %) | 1.016 | +0.39 % | ≤ 1.05 | PASS |");
        // 1024, n = 1: unmerged/merged = 320/262 = 1.221 > 1.15 by 6.2 %
        assertContains(md, "| 1024 | 8 | 1 | 250.0 | 260.0 | 262.0 | 320.0 | 1.008 | PASS | 1.221 | +1.56 % | ≤ 1.15 | MISS (+6.2 %) |");
        // 1024, n = 64: the issue sets no unmerged target there
        assertContains(md, "| 1024 | 8 | 64 | 800.0 | 810.0 | 815.0 | 900.0 | 1.006 | PASS | 1.104 | +1.56 % | — | — |");
    }

    @Test
    void theRankIndependentMergedVerdictIsShownForEveryRankButCountedOnce() {
        assertContains(md, "| 4096 | 64 | 64 | 12,500.0 | 12,520.0 | 12,800.0 | 14,000.0 | 1.022 | MISS (+0.2 %) | 1.094 | +3.13 % | — | — |");
        assertContains(md, "| 1024 | 64 | 1 | 250.0 | 260.0 | 262.0 | — | 1.008 | PASS | — | +12.50 % | — | — |");
    }

    @Test
    void mergeRowsCompareEachModeWithTheReferenceGemm() {
        assertContains(md, "| 4096 | 8 | EXACT | 2,800.0 | 3,200.0 | 2,000.0 | 2,000.0 | 1.400 | PASS | 1.600 | MISS (+6.7 %) |");
        assertContains(md, "| 4096 | 8 | FAST | 2,050.0 | 2,100.0 | 2,000.0 | 2,000.0 | 1.025 | PASS | 1.050 | PASS |");
    }

    @Test
    void exactVsFastShowsTimeRatioAndRecordSize() {
        assertContains(md, "| 4096 | 8 | 3,200.0 | 2,100.0 | 1.524 | 1.00 % | 83,886 (0.50 %) | 4.0 KiB | 64.0 MiB | 0.006 % |");
    }

    @Test
    void trainingStepIsComparedWithTwoGemms() {
        assertContains(md, "| 4096 | 8 | 64 | 30,000.0 | 12,520.0 | 2.396 |");
    }

    @Test
    void mixedBatchRatioIsJudgedAgainstOnePointThree() {
        assertContains(md, "| 4096 | 8 | 13,000.0 | 15,600.0 | 13,500.0 | 1.200 | 1.038 | PASS |");
    }

    @Test
    void summaryCountsEveryVerdict() {
        // PASS: merged/plain ×3, unmerged ×2, merge ×3, mixed ×1; MISS: merged/plain 4096 n=64, unmerged 1024 n=1,
        // EXACT unmerge. The r = 64 rows repeat the merged verdicts without counting them again.
        assertContains(md, "**Targets: 9 PASS, 3 MISS.**");
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
