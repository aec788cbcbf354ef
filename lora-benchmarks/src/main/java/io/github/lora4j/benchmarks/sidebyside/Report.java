package io.github.lora4j.benchmarks.sidebyside;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;

/**
 * The side-by-side report: per shape and target the ratio lora4j/PyTorch of the better median of each side over the
 * rounds, the range of the per-round ratios, and PASS/MISS against issue 10's targets; then every median with its
 * quartiles.
 */
final class Report {

    /** A compared target: lora4j's target name, PyTorch's, and the ratio it must stay under. */
    private record Column(String title, String java, String torch) {
    }

    private static final List<Column> COLUMNS = List.of(
            new Column("forward (plain)", "plain", "plain"),
            new Column("forward (merged)", "merged", "merged"),
            new Column("unmerged forward", "unmerged", "unmerged"),
            new Column("step with dL/dx", "step", "step"),
            new Column("step without dL/dx", "step_nodx", "step_nodx"),
            new Column("merge FAST vs addmm_", "merge_fast", "merge_pair"),
            new Column("merge EXACT vs addmm_", "merge_exact", "merge_pair"));

    private Report() {
    }

    /**
     * Issue 10's limit for a column: the hot path "at PyTorch's speed or better" (forward, merged and unmerged
     * forward, both steps, at every shape, 64 × 64 included), FAST merge "at most 1×" and EXACT "at most 2×" the
     * time of PyTorch's {@code addmm_} pair.
     */
    static double limit(String javaTarget) {
        return "merge_exact".equals(javaTarget) ? 2.0 : 1.0;
    }

    /** Verdicts, counted. */
    enum Verdict {
        PASS, MISS, NOISE
    }

    /**
     * The verdict on a ratio against {@code limit}: PASS if every round met it and so did the better medians, MISS
     * if no round did and the better medians did not either, otherwise within noise (one round says yes, another no).
     */
    static Verdict verdict(double best, double lo, double hi, double limit) {
        if (best <= limit && hi <= limit) {
            return Verdict.PASS;
        }
        if (best > limit && lo > limit) {
            return Verdict.MISS;
        }
        return Verdict.NOISE;
    }

    private static String label(Verdict v, double best, double limit) {
        switch (v) {
            case PASS:
                return "PASS";
            case MISS:
                return String.format(Locale.ROOT, "**MISS** (+%.0f %%)", 100 * (best / limit - 1));
            default:
                return "within noise";
        }
    }

    static String markdown(List<SideBySide.Result> results, List<String> env, int rounds, double budget, String args) {
        StringBuilder md = new StringBuilder();
        md.append("# lora4j vs PyTorch, side by side\n\n");
        md.append("Ratios are lora4j's time / PyTorch's (below 1: lora4j is faster), from the better median of each side over ")
                .append(rounds).append(" interleaved rounds (3 warm-up calls, then the median of the calls within a ")
                .append(budget).append(" s budget); in brackets the range of the per-round ratios. Issue 10's ")
                .append("targets: forward, merged and unmerged forward and both steps <= 1.0 (PyTorch's speed or better, at every ")
                .append("shape), merge FAST <= 1.0 and EXACT <= 2.0 times PyTorch's `W.addmm_(B, A)` pair; a merge is timed as one ")
                .append("merge plus one unmerge on both sides. PASS: every round and the better medians meet the target; MISS ")
                .append("(by how much): none does; within noise: the rounds disagree. float32, in = out = d, bias, alpha = 2r.\n\n");
        md.append("Run: `SideBySide ").append(args).append("`\n\n");
        for (String e : env) {
            md.append("- ").append(e).append('\n');
        }
        md.append("\n| d, r, n |");
        for (Column c : COLUMNS) {
            md.append(' ').append(c.title()).append(" |");
        }
        md.append(" unmerged / merged (lora4j) |\n|---|");
        md.append("---:|".repeat(COLUMNS.size() + 1)).append('\n');
        Map<Verdict, Integer> count = new java.util.EnumMap<>(Verdict.class);
        for (Verdict v : Verdict.values()) {
            count.put(v, 0);
        }
        for (int[] s : shapes(results)) {
            md.append("| ").append(s[0]).append(", ").append(s[1]).append(", ").append(s[2]).append(" |");
            for (Column c : COLUMNS) {
                Optional<double[]> ratio = ratio(results, s, c.java(), "lora4j", c.torch(), "torch");
                if (ratio.isEmpty()) {
                    md.append(" |");
                    continue;
                }
                double[] q = ratio.get();
                double limit = limit(c.java());
                Verdict v = verdict(q[0], q[1], q[2], limit);
                count.merge(v, 1, Integer::sum);
                md.append(String.format(Locale.ROOT, " %.2f (%.2f–%.2f) %s |", q[0], q[1], q[2], label(v, q[0], limit)));
            }
            Optional<double[]> um = ratio(results, s, "unmerged", "lora4j", "merged", "lora4j");
            if (um.isPresent() && s[0] == 4096 && s[1] == 8) {
                double[] q = um.get();
                Verdict v = verdict(q[0], q[1], q[2], 1.05);
                count.merge(v, 1, Integer::sum);
                md.append(String.format(Locale.ROOT, " %.3f %s |", q[0], label(v, q[0], 1.05)));
            } else {
                md.append(um.map(q -> String.format(Locale.ROOT, " %.3f |", q[0])).orElse(" |"));
            }
            md.append('\n');
        }
        md.append("\n").append(count.get(Verdict.PASS)).append(" PASS, ").append(count.get(Verdict.MISS)).append(" MISS, ")
                .append(count.get(Verdict.NOISE)).append(" within noise.\n\n");
        md.append("## Medians in ms (better round), [p25, p75] of that round's calls\n\n| d, r, n | target | lora4j | PyTorch |\n|---|---|---:|---:|\n");
        for (int[] s : shapes(results)) {
            for (String target : List.of("plain", "merged", "unmerged", "step", "step_nodx", "merge_fast", "merge_exact",
                    "merge_pair")) {
                String j = best(results, s, target, "lora4j").map(Report::cell).orElse("");
                String t = best(results, s, target.startsWith("merge_") && !target.equals("merge_pair") ? "-" : target, "torch")
                        .map(Report::cell).orElse("");
                if (!j.isEmpty() || !t.isEmpty()) {
                    md.append("| ").append(s[0]).append(", ").append(s[1]).append(", ").append(s[2]).append(" | ")
                            .append(target).append(" | ").append(j).append(" | ").append(t).append(" |\n");
                }
            }
        }
        return md.toString();
    }

    private static String cell(Timing.Stats s) {
        return String.format(Locale.ROOT, "%.4f [%.4f, %.4f] (%d calls)", s.medianMs(), s.p25Ms(), s.p75Ms(), s.calls());
    }

    private static List<int[]> shapes(List<SideBySide.Result> results) {
        Map<String, int[]> seen = new LinkedHashMap<>();
        for (SideBySide.Result r : results) {
            seen.putIfAbsent(r.d() + "," + r.r() + "," + r.n(), new int[] {r.d(), r.r(), r.n()});
        }
        return new ArrayList<>(seen.values());
    }

    private static List<SideBySide.Result> of(List<SideBySide.Result> results, int[] s, String target, String side) {
        return results.stream().filter(r -> r.side().equals(side) && r.target().equals(target) && r.d() == s[0]
                && r.r() == s[1] && r.n() == s[2]).toList();
    }

    private static Optional<Timing.Stats> best(List<SideBySide.Result> results, int[] s, String target, String side) {
        return of(results, s, target, side).stream().map(SideBySide.Result::stats)
                .min((a, b) -> Double.compare(a.medianMs(), b.medianMs()));
    }

    /** {best(a) / best(b), min and max over rounds of a_round / b_round}, or empty when either side lacks it. */
    private static Optional<double[]> ratio(List<SideBySide.Result> results, int[] s, String a, String sideA, String b,
                                            String sideB) {
        Optional<Timing.Stats> ba = best(results, s, a, sideA);
        Optional<Timing.Stats> bb = best(results, s, b, sideB);
        if (ba.isEmpty() || bb.isEmpty()) {
            return Optional.empty();
        }
        double lo = Double.POSITIVE_INFINITY;
        double hi = 0;
        for (SideBySide.Result ra : of(results, s, a, sideA)) {
            for (SideBySide.Result rb : of(results, s, b, sideB)) {
                if (ra.round() == rb.round()) {
                    double q = ra.stats().medianMs() / rb.stats().medianMs();
                    lo = Math.min(lo, q);
                    hi = Math.max(hi, q);
                }
            }
        }
        return Optional.of(new double[] {ba.get().medianMs() / bb.get().medianMs(), lo, hi});
    }
}
