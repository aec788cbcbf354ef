package io.github.lora4j.benchmarks.report;

import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.OptionalDouble;

/**
 * Renders {@link ReportData} as Markdown: environment, forward costs against the plain gemm and the theoretical
 * LoRA cost, merge/unmerge against the reference gemm, exact vs fast unmerge (time and memory), training steps
 * and the mixed-adapter batch, each with its target and PASS/MISS. Every time is a median in µs.
 */
public final class MarkdownReport {

    static final String FORWARD = "ForwardBenchmark";
    static final String MERGE = "MergeBenchmark";
    static final String STEP = "TrainingStepBenchmark.step";
    static final String MIXED = "MixedBatchBenchmark";

    private final ReportData data;
    private final StringBuilder md = new StringBuilder();
    private int passes;
    private int misses;

    private MarkdownReport(ReportData data) {
        this.data = data;
    }

    /**
     * The report as Markdown.
     *
     * @param data      what to render
     * @param chartFile file name of the overhead chart to link (relative to the Markdown file), or null for none
     */
    public static String render(ReportData data, String chartFile) {
        MarkdownReport r = new MarkdownReport(data);
        r.build(chartFile);
        return r.md.toString();
    }

    private void build(String chartFile) {
        StringBuilder body = md;
        line("# lora4j benchmark report");
        line("");
        environment();
        forward();
        if (chartFile != null) {
            line("![unmerged / merged vs batch size](" + chartFile + ")");
            line("");
        }
        merge();
        exactVsFast();
        trainingStep();
        mixed();
        String summary = String.format(Locale.ROOT, "**Targets: %d PASS, %d MISS.** Times are medians in µs "
                + "(JMH sample-time mode: the 50th percentile of all timed invocations of a benchmark).%n%n",
                passes, misses);
        int at = body.indexOf("## Environment");
        body.insert(at < 0 ? body.length() : at, summary);
    }

    private void environment() {
        line("## Environment");
        line("");
        if (data.environment().isEmpty()) {
            line("(not recorded)");
        } else {
            line("| key | value |");
            line("|---|---|");
            for (Map.Entry<String, String> e : data.environment().entrySet()) {
                line("| " + e.getKey() + " | " + escape(e.getValue()) + " |");
            }
        }
        line("");
    }

    private void forward() {
        List<Integer> sizes = data.values(FORWARD + ".unmerged", "size");
        if (sizes.isEmpty()) {
            sizes = data.values(FORWARD + ".plain", "size");
        }
        if (sizes.isEmpty()) {
            return;
        }
        line("## Forward (in = out = size, float32)");
        line("");
        line("`plain` is `Nd4j.gemm(x, W, y, false, true, 1, 0)` into a preallocated `y`; `plain+alloc` allocates `y` "
                + "first, as `LoraLinear.forward` does, and is the baseline of merged/plain (both allocate). "
                + "`theory` is the cost model's extra work of the unmerged path, r·(in+out)/(in·out).");
        line("");
        line("| size | r | n | plain | plain+alloc | merged | unmerged | merged/plain | target ≤ "
                + fmt(Targets.MERGED_OVER_PLAIN) + " | unmerged/merged | theory | target | verdict |");
        line("|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|");
        List<Integer> ranks = data.values(FORWARD + ".unmerged", "rank");
        if (ranks.isEmpty()) {
            ranks = List.of(-1);
        }
        for (int size : sizes) {
            for (int rank : ranks) {
                for (int n : batches(size)) {
                    String sz = String.valueOf(size);
                    String b = String.valueOf(n);
                    double plain = data.median(FORWARD + ".plain", "size", sz, "batch", b);
                    double alloc = data.median(FORWARD + ".plainAllocating", "size", sz, "batch", b);
                    double merged = data.median(FORWARD + ".merged", "size", sz, "batch", b);
                    double unmerged = rank < 0 ? Double.NaN
                            : data.median(FORWARD + ".unmerged", "size", sz, "rank", String.valueOf(rank), "batch", b);
                    double mp = merged / alloc;
                    double um = unmerged / merged;
                    OptionalDouble t = rank < 0 ? OptionalDouble.empty() : Targets.unmergedOverMerged(size, rank, n);
                    String theory = rank < 0 ? "—"
                            : String.format(Locale.ROOT, "+%.2f %%", 100 * Targets.theoreticalExtraCost(rank, size, size));
                    line("| " + size + " | " + (rank < 0 ? "—" : rank) + " | " + n + " | " + us(plain) + " | " + us(alloc)
                            + " | " + us(merged) + " | " + us(unmerged) + " | " + ratio(mp) + " | "
                            // merged is rank-independent: judge (and count) it on the first rank's row only
                            + (rank == ranks.get(0) ? judge(mp, Targets.MERGED_OVER_PLAIN)
                                    : Targets.verdict(mp, Targets.MERGED_OVER_PLAIN)) + " | " + ratio(um) + " | " + theory + " | "
                            + (t.isPresent() ? "≤ " + fmt(t.getAsDouble()) : "—") + " | "
                            + (t.isPresent() ? judge(um, t.getAsDouble()) : "—") + " |");
                }
            }
        }
        line("");
        line("The merged layer's cost does not depend on r (it is one gemm on W), so one merged measurement per size "
                + "and batch serves every rank; its verdict is counted once.");
        line("");
    }

    private List<Integer> batches(int size) {
        return data.measurements().stream()
                .filter(m -> m.benchmark().startsWith(FORWARD + ".") && m.intParam("size") == size)
                .map(m -> m.intParam("batch")).filter(v -> v >= 0).distinct().sorted().toList();
    }

    private void merge() {
        List<Integer> sizes = data.values(MERGE + ".merge", "size");
        if (sizes.isEmpty()) {
            return;
        }
        line("## Merge and unmerge (one adapter into W)");
        line("");
        line("`reference` is one `Nd4j.gemm(B, A, W, false, false, s, 1)` (merge) or the same with −s (unmerge): "
                + "a `[out, r] × [r, in]` gemm accumulated into W. Target: each ≤ " + fmt(Targets.MERGE_OVER_GEMM)
                + " × reference.");
        line("");
        line("| size | r | mode | merge | unmerge | reference merge | reference unmerge | merge/ref | verdict "
                + "| unmerge/ref | verdict |");
        line("|---:|---:|---|---:|---:|---:|---:|---:|---|---:|---|");
        for (int size : sizes) {
            for (int rank : data.values(MERGE + ".merge", "rank")) {
                String sz = String.valueOf(size);
                String r = String.valueOf(rank);
                double refMerge = data.median(MERGE + ".merge", "size", sz, "rank", r, "mode", "GEMM");
                double refUnmerge = data.median(MERGE + ".unmerge", "size", sz, "rank", r, "mode", "GEMM");
                for (String mode : List.of("EXACT", "FAST")) {
                    double m = data.median(MERGE + ".merge", "size", sz, "rank", r, "mode", mode);
                    double u = data.median(MERGE + ".unmerge", "size", sz, "rank", r, "mode", mode);
                    if (Double.isNaN(m) && Double.isNaN(u)) {
                        continue;
                    }
                    line("| " + size + " | " + rank + " | " + mode + " | " + us(m) + " | " + us(u) + " | " + us(refMerge)
                            + " | " + us(refUnmerge) + " | " + ratio(m / refMerge) + " | "
                            + judge(m / refMerge, Targets.MERGE_OVER_GEMM) + " | " + ratio(u / refUnmerge) + " | "
                            + judge(u / refUnmerge, Targets.MERGE_OVER_GEMM) + " |");
                }
            }
        }
        line("");
    }

    private void exactVsFast() {
        List<Integer> sizes = data.values(MERGE + ".unmerge", "size");
        if (sizes.isEmpty() && data.memory().isEmpty()) {
            return;
        }
        line("## Exact vs plain (fast) unmerge");
        line("");
        line("EXACT restores W bit for bit after any number of cycles by remembering the few elements where "
                + "fl(fl(w + d) − d) ≠ w; FAST subtracts with one gemm. Memory is `LoraLinear.exactMergeBytes()` "
                + "right after an exact merge of an adapter with ‖s·B·A‖_F / ‖W‖_F as given (W ~ U(±1/√in)).");
        line("");
        line("`inexact elements` are those whose round trip fl(fl(w + d) − d) ≠ w, counted over W and one "
                + "unblocked Δ: what the record remembers, at 12 B each (int index, raw bits; the record is trimmed "
                + "after the merge).");
        line("");
        line("| size | r | EXACT unmerge | FAST unmerge | EXACT/FAST | ‖sΔ‖/‖W‖ | inexact elements | exact record | W "
                + "| record/W |");
        line("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        List<int[]> shapes = new java.util.ArrayList<>();
        for (int size : sizes) {
            for (int rank : data.values(MERGE + ".unmerge", "rank")) {
                shapes.add(new int[] {size, rank});
            }
        }
        for (ExactMergeMemory m : data.memory()) {
            if (shapes.stream().noneMatch(s -> s[0] == m.size() && s[1] == m.rank())) {
                shapes.add(new int[] {m.size(), m.rank()});
            }
        }
        for (int[] s : shapes) {
            String sz = String.valueOf(s[0]);
            String r = String.valueOf(s[1]);
            double exact = data.median(MERGE + ".unmerge", "size", sz, "rank", r, "mode", "EXACT");
            double fast = data.median(MERGE + ".unmerge", "size", sz, "rank", r, "mode", "FAST");
            ExactMergeMemory mem = data.memory().stream().filter(m -> m.size() == s[0] && m.rank() == s[1])
                    .findFirst().orElse(null);
            line("| " + s[0] + " | " + s[1] + " | " + us(exact) + " | " + us(fast) + " | " + ratio(exact / fast) + " | "
                    + (mem == null ? "—" : String.format(Locale.ROOT, "%.2f %%", 100 * mem.relativeUpdate())) + " | "
                    + (mem == null || mem.inexact() < 0 ? "—" : String.format(Locale.ROOT, "%,d (%.2f %%)", mem.inexact(),
                            100 * mem.inexactFraction())) + " | "
                    + (mem == null ? "—" : bytes(mem.recordBytes())) + " | " + (mem == null ? "—" : bytes(mem.weightBytes()))
                    + " | " + (mem == null ? "—" : String.format(Locale.ROOT, "%.3f %%", 100 * mem.fractionOfWeight()))
                    + " |");
        }
        line("");
    }

    private void trainingStep() {
        List<Integer> sizes = data.values(STEP, "size");
        if (sizes.isEmpty()) {
            return;
        }
        line("## Training step (forward + backward + zeroGrad, unmerged)");
        line("");
        line("By the cost model a step is about two base gemms (x·Wᵀ and g·W), so step / plain+alloc ≈ 2 is the "
                + "floor; the excess is the LoRA gemms and dispatch. The step allocates no array of W's size "
                + "(TrainingStepAllocationTest in lora-core).");
        line("");
        line("| size | r | n | step | plain+alloc forward | step / plain+alloc |");
        line("|---:|---:|---:|---:|---:|---:|");
        for (int size : sizes) {
            for (int rank : data.values(STEP, "rank")) {
                for (int n : data.values(STEP, "batch")) {
                    String sz = String.valueOf(size);
                    String b = String.valueOf(n);
                    double step = data.median(STEP, "size", sz, "rank", String.valueOf(rank), "batch", b);
                    if (Double.isNaN(step)) {
                        continue;
                    }
                    double alloc = data.median(FORWARD + ".plainAllocating", "size", sz, "batch", b);
                    line("| " + size + " | " + rank + " | " + n + " | " + us(step) + " | " + us(alloc) + " | "
                            + ratio(step / alloc) + " |");
                }
            }
        }
        line("");
    }

    private void mixed() {
        List<Integer> sizes = data.values(MIXED + ".single", "size");
        if (sizes.isEmpty()) {
            return;
        }
        line("## Mixed-adapter batch (64 rows, 8 adapters)");
        line("");
        line("`single`: `forward(x)` with one unmerged adapter; `mixed`: `forward(x, adapterPerRow)` with rows "
                + "assigned round-robin (row i → adapter i mod 8, rows interleaved); `grouped`: "
                + "rows already in 8 contiguous blocks. Target: mixed/single ≤ " + fmt(Targets.MIXED_OVER_SINGLE) + ".");
        line("");
        line("| size | r | single | mixed | grouped | mixed/single | grouped/single | verdict |");
        line("|---:|---:|---:|---:|---:|---:|---:|---|");
        for (int size : sizes) {
            for (int rank : data.values(MIXED + ".single", "rank")) {
                String sz = String.valueOf(size);
                String r = String.valueOf(rank);
                double single = data.median(MIXED + ".single", "size", sz, "rank", r);
                double mixed = data.median(MIXED + ".mixed", "size", sz, "rank", r);
                double grouped = data.median(MIXED + ".mixedGrouped", "size", sz, "rank", r);
                line("| " + size + " | " + rank + " | " + us(single) + " | " + us(mixed) + " | " + us(grouped) + " | "
                        + ratio(mixed / single) + " | " + ratio(grouped / single) + " | "
                        + judge(mixed / single, Targets.MIXED_OVER_SINGLE) + " |");
            }
        }
        line("");
    }

    private String judge(double ratio, double target) {
        String v = Targets.verdict(ratio, target);
        if (v.equals("PASS")) {
            passes++;
        } else if (v.startsWith("MISS")) {
            misses++;
        }
        return v;
    }

    private void line(String s) {
        md.append(s).append('\n');
    }

    private static String us(double v) {
        return Double.isNaN(v) ? "—" : String.format(Locale.ROOT, "%,.1f", v);
    }

    private static String ratio(double v) {
        return Double.isNaN(v) || Double.isInfinite(v) ? "—" : String.format(Locale.ROOT, "%.3f", v);
    }

    private static String fmt(double v) {
        return String.format(Locale.ROOT, "%.2f", v);
    }

    static String bytes(long b) {
        if (b < 1024) {
            return b + " B";
        }
        if (b < 1024 * 1024) {
            return String.format(Locale.ROOT, "%.1f KiB", b / 1024.0);
        }
        return String.format(Locale.ROOT, "%.1f MiB", b / (1024.0 * 1024));
    }

    private static String escape(String s) {
        return s.replace("|", "\\|").replace("\n", " ");
    }
}
