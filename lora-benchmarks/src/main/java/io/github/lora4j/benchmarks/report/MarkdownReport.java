package io.github.lora4j.benchmarks.report;

import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.OptionalDouble;

/**
 * Renders {@link ReportData} as Markdown: environment, forward costs against the plain gemm and the theoretical
 * LoRA cost, merge/unmerge against the reference gemm, exact vs fast unmerge (time and memory), training steps
 * and the mixed-adapter batch, each with its target and a verdict (PASS, MISS or within noise, from the ratio's
 * interval), and the run-to-run variance of results measured in several forks. Every time is a median in µs.
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
    private int noise;

    /** How ratios carry their intervals and how verdicts read them; printed above the first table. */
    static final String INTERVALS = "Every ratio is `value [low, high]`: each time's range is its median ± JMH's "
            + "relative 99.9 % error of the mean, widened to hold every fork's own median, and a ratio's range is "
            + "the widest quotient of the two ranges. Verdict: **PASS** if the whole range meets the target, "
            + "**MISS (+x %)** if none of it does (x: how far the value lies above the target), **within noise** "
            + "if the target lies inside the range.";

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
        forks();
        merge();
        exactVsFast();
        trainingStep();
        mixed();
        String summary = String.format(Locale.ROOT, "**Targets: %d PASS, %d MISS, %d within noise.** Times are "
                + "medians in µs (JMH sample-time mode: the 50th percentile of all timed invocations of a benchmark)."
                + "%n%n", passes, misses, noise);
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

    /** The median and its interval of the matching measurement; missing (NaN) when there is none. */
    private Interval time(String benchmark, String... keyValues) {
        return data.find(benchmark, keyValues).map(Measurement::interval)
                .orElse(new Interval(Double.NaN, Double.NaN, Double.NaN));
    }

    private static String[] shapeKeys(int[] shape, String... more) {
        String[] kv = new String[4 + more.length];
        kv[0] = "in";
        kv[1] = String.valueOf(shape[0]);
        kv[2] = "out";
        kv[3] = String.valueOf(shape[1]);
        System.arraycopy(more, 0, kv, 4, more.length);
        return kv;
    }

    private void forward() {
        List<int[]> shapes = data.shapes(FORWARD + ".");
        if (shapes.isEmpty()) {
            return;
        }
        line("## Forward (W [out, in], float32)");
        line("");
        line("`plain` is `Nd4j.gemm(x, W, y, false, true, 1, 0)` into a preallocated `y`; `plain+alloc` allocates `y` "
                + "first, as `LoraLinear.forward` does, and is what `merged / plain+alloc` divides by (both allocate). "
                + "`theory` is the cost model's extra work of the unmerged path, r·(in+out)/(in·out).");
        line("");
        line(INTERVALS);
        line("");
        line("| in | out | r | n | plain | plain+alloc | merged | unmerged | merged / plain+alloc | verdict (≤ "
                + fmt(Targets.MERGED_OVER_PLAIN) + ") | unmerged / merged | theory | target | verdict |");
        line("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|");
        List<Integer> ranks = data.values(FORWARD + ".unmerged", "rank");
        if (ranks.isEmpty()) {
            ranks = List.of(-1);
        }
        for (int[] shape : shapes) {
            for (int rank : ranks) {
                for (int n : batches(shape)) {
                    String b = String.valueOf(n);
                    Interval plain = time(FORWARD + ".plain", shapeKeys(shape, "batch", b));
                    Interval alloc = time(FORWARD + ".plainAllocating", shapeKeys(shape, "batch", b));
                    Interval merged = time(FORWARD + ".merged", shapeKeys(shape, "batch", b));
                    Interval unmerged = rank < 0 ? time("none")
                            : time(FORWARD + ".unmerged", shapeKeys(shape, "rank", String.valueOf(rank), "batch", b));
                    Interval mp = merged.over(alloc);
                    Interval um = unmerged.over(merged);
                    OptionalDouble t = rank < 0 ? OptionalDouble.empty()
                            : Targets.unmergedOverMerged(shape[0], shape[1], rank, n);
                    String theory = rank < 0 ? "—" : String.format(Locale.ROOT, "+%.2f %%",
                            100 * Targets.theoreticalExtraCost(rank, shape[0], shape[1]));
                    line("| " + shape[0] + " | " + shape[1] + " | " + (rank < 0 ? "—" : rank) + " | " + n + " | "
                            + us(plain.value()) + " | " + us(alloc.value()) + " | " + us(merged.value()) + " | "
                            + us(unmerged.value()) + " | " + mp.formatRatio() + " | "
                            // merged is rank-independent: judge (and count) it on the first rank's row only
                            + (rank == ranks.get(0) ? judge(mp, Targets.MERGED_OVER_PLAIN)
                                    : Targets.verdict(mp, Targets.MERGED_OVER_PLAIN)) + " | " + um.formatRatio() + " | "
                            + theory + " | " + (t.isPresent() ? "≤ " + fmt(t.getAsDouble()) : "—") + " | "
                            + (t.isPresent() ? judge(um, t.getAsDouble()) : "—") + " |");
                }
            }
        }
        line("");
        line("The merged layer's cost does not depend on r (it is one gemm on W), so one merged measurement per shape "
                + "and batch serves every rank; its verdict is counted once.");
        line("");
    }

    private List<Integer> batches(int[] shape) {
        return data.measurements().stream()
                .filter(m -> m.benchmark().startsWith(FORWARD + ".") && m.intParam("in") == shape[0]
                        && m.intParam("out") == shape[1])
                .map(m -> m.intParam("batch")).filter(v -> v >= 0).distinct().sorted().toList();
    }

    private void forks() {
        List<Measurement> multi = data.measurements().stream().filter(m -> m.forkMediansUs().size() >= 2).toList();
        if (multi.isEmpty()) {
            return;
        }
        line("## Run-to-run variance (forks)");
        line("");
        line("Each fork is a fresh JVM. Its own median shows how much a result moves from run to run, which one "
                + "fork's error bar cannot show; the intervals above include every fork's median.");
        line("");
        line("| benchmark | parameters | median | fork medians | spread (max/min − 1) |");
        line("|---|---|---:|---|---:|");
        for (Measurement m : multi) {
            StringBuilder forks = new StringBuilder();
            for (double f : m.forkMediansUs()) {
                forks.append(forks.length() == 0 ? "" : ", ").append(us(f));
            }
            line("| " + m.benchmark() + " | " + params(m) + " | " + us(m.medianUs()) + " | " + forks + " | "
                    + String.format(Locale.ROOT, "%.1f %%", 100 * m.forkSpread()) + " |");
        }
        line("");
    }

    private static String params(Measurement m) {
        StringBuilder p = new StringBuilder();
        m.params().forEach((k, v) -> p.append(p.length() == 0 ? "" : ", ").append(k).append(" = ").append(v));
        return p.toString();
    }

    private void merge() {
        List<int[]> shapes = data.shapes(MERGE + ".merge");
        if (shapes.isEmpty()) {
            return;
        }
        line("## Merge and unmerge (one adapter into W)");
        line("");
        line("`reference` is one `Nd4j.gemm(B, A, W, false, false, s, 1)` (merge) or the same with −s (unmerge): "
                + "a `[out, r] × [r, in]` gemm accumulated into W. Target: each ≤ " + fmt(Targets.MERGE_OVER_GEMM)
                + " × reference.");
        line("");
        line("| in | out | r | mode | merge | unmerge | reference merge | reference unmerge | merge / reference "
                + "| verdict | unmerge / reference | verdict |");
        line("|---:|---:|---:|---|---:|---:|---:|---:|---:|---|---:|---|");
        for (int[] shape : shapes) {
            for (int rank : data.values(MERGE + ".merge", "rank")) {
                String r = String.valueOf(rank);
                Interval refMerge = time(MERGE + ".merge", shapeKeys(shape, "rank", r, "mode", "GEMM"));
                Interval refUnmerge = time(MERGE + ".unmerge", shapeKeys(shape, "rank", r, "mode", "GEMM"));
                for (String mode : List.of("EXACT", "FAST")) {
                    Interval m = time(MERGE + ".merge", shapeKeys(shape, "rank", r, "mode", mode));
                    Interval u = time(MERGE + ".unmerge", shapeKeys(shape, "rank", r, "mode", mode));
                    if (m.isMissing() && u.isMissing()) {
                        continue;
                    }
                    line("| " + shape[0] + " | " + shape[1] + " | " + rank + " | " + mode + " | " + us(m.value())
                            + " | " + us(u.value()) + " | " + us(refMerge.value()) + " | " + us(refUnmerge.value())
                            + " | " + m.over(refMerge).formatRatio() + " | "
                            + judge(m.over(refMerge), Targets.MERGE_OVER_GEMM) + " | "
                            + u.over(refUnmerge).formatRatio() + " | "
                            + judge(u.over(refUnmerge), Targets.MERGE_OVER_GEMM) + " |");
                }
            }
        }
        line("");
    }

    private void exactVsFast() {
        List<int[]> shapes = data.shapes(MERGE + ".unmerge");
        if (shapes.isEmpty() && data.memory().isEmpty()) {
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
        line("| in | out | r | EXACT unmerge | FAST unmerge | EXACT / FAST | ‖sΔ‖/‖W‖ | inexact elements | exact record "
                + "| W | record / W |");
        line("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        List<int[]> rows = new ArrayList<>();
        for (int[] shape : shapes) {
            for (int rank : data.values(MERGE + ".unmerge", "rank")) {
                rows.add(new int[] {shape[0], shape[1], rank});
            }
        }
        for (ExactMergeMemory m : data.memory()) {
            if (rows.stream().noneMatch(s -> s[0] == m.in() && s[1] == m.out() && s[2] == m.rank())) {
                rows.add(new int[] {m.in(), m.out(), m.rank()});
            }
        }
        for (int[] s : rows) {
            int[] shape = {s[0], s[1]};
            String r = String.valueOf(s[2]);
            Interval exact = time(MERGE + ".unmerge", shapeKeys(shape, "rank", r, "mode", "EXACT"));
            Interval fast = time(MERGE + ".unmerge", shapeKeys(shape, "rank", r, "mode", "FAST"));
            ExactMergeMemory mem = data.memory().stream()
                    .filter(m -> m.in() == s[0] && m.out() == s[1] && m.rank() == s[2]).findFirst().orElse(null);
            line("| " + s[0] + " | " + s[1] + " | " + s[2] + " | " + us(exact.value()) + " | " + us(fast.value()) + " | "
                    + exact.over(fast).formatRatio() + " | "
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
        List<int[]> shapes = data.shapes(STEP);
        if (shapes.isEmpty()) {
            return;
        }
        line("## Training step (forward + backward + zeroGrad, unmerged)");
        line("");
        line("By the cost model a step is about two base gemms (x·Wᵀ and g·W), so step / plain+alloc ≈ 2 is the "
                + "floor; the excess is the LoRA gemms and dispatch. The step allocates no array of W's size "
                + "(TrainingStepAllocationTest in lora-core).");
        line("");
        line("| in | out | r | n | step | plain+alloc forward | step / plain+alloc |");
        line("|---:|---:|---:|---:|---:|---:|---:|");
        for (int[] shape : shapes) {
            for (int rank : data.values(STEP, "rank")) {
                for (int n : data.values(STEP, "batch")) {
                    String b = String.valueOf(n);
                    Interval step = time(STEP, shapeKeys(shape, "rank", String.valueOf(rank), "batch", b));
                    if (step.isMissing()) {
                        continue;
                    }
                    Interval alloc = time(FORWARD + ".plainAllocating", shapeKeys(shape, "batch", b));
                    line("| " + shape[0] + " | " + shape[1] + " | " + rank + " | " + n + " | " + us(step.value()) + " | "
                            + us(alloc.value()) + " | " + step.over(alloc).formatRatio() + " |");
                }
            }
        }
        line("");
    }

    private void mixed() {
        List<int[]> shapes = data.shapes(MIXED + ".single");
        if (shapes.isEmpty()) {
            return;
        }
        line("## Mixed-adapter batch (64 rows, 8 adapters)");
        line("");
        line("`single`: `forward(x)` with one unmerged adapter; `mixed`: `forward(x, adapterPerRow)` with rows "
                + "assigned round-robin (row i → adapter i mod 8, rows interleaved); `grouped`: "
                + "rows already in 8 contiguous blocks. Target: mixed / single ≤ " + fmt(Targets.MIXED_OVER_SINGLE) + ".");
        line("");
        line("| in | out | r | single | mixed | grouped | mixed / single | grouped / single | verdict |");
        line("|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        for (int[] shape : shapes) {
            for (int rank : data.values(MIXED + ".single", "rank")) {
                String r = String.valueOf(rank);
                Interval single = time(MIXED + ".single", shapeKeys(shape, "rank", r));
                Interval mixed = time(MIXED + ".mixed", shapeKeys(shape, "rank", r));
                Interval grouped = time(MIXED + ".mixedGrouped", shapeKeys(shape, "rank", r));
                line("| " + shape[0] + " | " + shape[1] + " | " + rank + " | " + us(single.value()) + " | "
                        + us(mixed.value()) + " | " + us(grouped.value()) + " | " + mixed.over(single).formatRatio()
                        + " | " + grouped.over(single).formatRatio() + " | "
                        + judge(mixed.over(single), Targets.MIXED_OVER_SINGLE) + " |");
            }
        }
        line("");
    }

    private String judge(Interval ratio, double target) {
        String v = Targets.verdict(ratio, target);
        if (v.equals("PASS")) {
            passes++;
        } else if (v.startsWith("MISS")) {
            misses++;
        } else if (v.equals(Targets.WITHIN_NOISE)) {
            noise++;
        }
        return v;
    }

    private void line(String s) {
        md.append(s).append('\n');
    }

    private static String us(double v) {
        return Double.isNaN(v) ? "—" : String.format(Locale.ROOT, "%,.1f", v);
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
