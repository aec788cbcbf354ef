package io.github.lora4j.benchmarks;

import io.github.lora4j.LoraAdapter;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.LoraMath;
import io.github.lora4j.MergeMode;
import java.io.PrintStream;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * What a LoRA adapter costs on your own layer shape, measured in one process in under a minute:
 *
 * <pre>
 * java -cp lora-benchmarks/target/benchmarks.jar io.github.lora4j.benchmarks.OverheadProbe --in 4096 --out 11008 --r 16 --n 1,8,64
 * </pre>
 *
 * <p>For each batch size {@code n} the variants run <em>interleaved</em>, one call of each per round, so machine
 * noise hits them alike: the plain gemm {@code y = x Wᵀ} into a preallocated {@code y} and into a fresh one, the
 * merged and the unmerged {@code LoraLinear.forward}, and a training step (forward, backward, zeroGrad). Then, once
 * (they do not depend on {@code n}), merge and unmerge EXACT and FAST against the reference gemm
 * {@code W += s·B·A}. It prints medians with the interquartile range, the ratios as medians of the per-round
 * ratios (same interval), the theory {@code r·(in+out)/(in·out)} and the extra memory of the adapter.
 *
 * <p>Only {@code LoraLinear}'s public API is used, so the probe measures what a user's code gets. Timing is by
 * {@code System.nanoTime} around single calls of milliseconds; use JMH ({@code BenchmarkReport}) for sub-millisecond
 * shapes.
 */
public final class OverheadProbe {

    /** Largest {@code in·out} accepted: the three float32 copies of {@code W} the probe holds then take 3 GiB. */
    static final long MAX_WEIGHT_ELEMENTS = 1L << 28;
    /** Largest batch accepted. */
    static final int MAX_BATCH = 65_536;
    /** Fewest measured rounds per phase, even when the budget is spent (a busy machine). */
    static final int MIN_ROUNDS = 3;
    /** Weight of the merge phase against one forward phase when the budget is split. */
    static final double MERGE_WEIGHT = 0.5;

    static final String USAGE = """
            Usage: java -cp lora-benchmarks/target/benchmarks.jar io.github.lora4j.benchmarks.OverheadProbe [options]

            Measures, interleaved in one process, what a LoRA adapter costs on a layer W [out, in] (float32):
            plain gemm, merged and unmerged forward, training step, merge/unmerge EXACT and FAST, extra memory.

            Options:
              --in K          input features (columns of W)              default 4096
              --out D         output features (rows of W)                default 4096
              --r R           LoRA rank, 1..min(in, out)                 default 8
              --n N1,N2,...   batch sizes (rows of x), comma-separated   default 1,8,64
              --seconds S     time budget of the whole run, 5..600       default 40
              --help          print this and exit

            Example (LLaMA-7B up_proj, r = 16):
              ... OverheadProbe --in 4096 --out 11008 --r 16 --n 1,8,64
            """;

    private OverheadProbe() {
    }

    /**
     * What to measure.
     *
     * @param in      input features k (columns of {@code W [out, in]})
     * @param out     output features d (rows)
     * @param rank    LoRA rank r
     * @param batches batch sizes n, in the order given
     * @param seconds time budget of the whole run, set-up and warm-up included (JVM start excluded)
     * @param help    whether only the usage was asked for
     */
    record Options(int in, int out, int rank, List<Integer> batches, double seconds, boolean help) {

        /** The defaults: 4096 × 4096, r = 8, n = 1, 8, 64, 40 s. */
        static Options defaults() {
            return new Options(4096, 4096, 8, List.of(1, 8, 64), 40, false);
        }
    }

    /**
     * Parses the command line.
     *
     * @throws IllegalArgumentException naming the option, what it expects and what it got
     */
    static Options parse(String[] args) {
        Options d = Options.defaults();
        Map<String, String> v = new LinkedHashMap<>();
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            if (a.equals("--help") || a.equals("-h")) {
                return new Options(d.in(), d.out(), d.rank(), d.batches(), d.seconds(), true);
            }
            if (!List.of("--in", "--out", "--r", "--n", "--seconds").contains(a)) {
                throw new IllegalArgumentException("unknown argument '" + a
                        + "'; expected --in, --out, --r, --n, --seconds or --help");
            }
            if (i + 1 >= args.length) {
                throw new IllegalArgumentException(a + ": expected a value after it, got none");
            }
            if (v.put(a, args[++i]) != null) {
                throw new IllegalArgumentException(a + ": given twice");
            }
        }
        int in = v.containsKey("--in") ? positiveInt("--in", v.get("--in"), Integer.MAX_VALUE) : d.in();
        int out = v.containsKey("--out") ? positiveInt("--out", v.get("--out"), Integer.MAX_VALUE) : d.out();
        if ((long) in * out > MAX_WEIGHT_ELEMENTS) {
            throw new IllegalArgumentException(String.format(Locale.ROOT, "--in × --out: expected at most %,d "
                    + "elements (the probe holds three float32 copies of W), got %,d × %,d = %,d", MAX_WEIGHT_ELEMENTS,
                    in, out, (long) in * out));
        }
        int rank = v.containsKey("--r") ? positiveInt("--r", v.get("--r"), Integer.MAX_VALUE) : d.rank();
        if (rank > Math.min(in, out)) {
            throw new IllegalArgumentException("--r: expected 1.." + Math.min(in, out) + " (min(in, out)) for " + in
                    + " × " + out + ", got " + rank);
        }
        List<Integer> batches = d.batches();
        if (v.containsKey("--n")) {
            batches = new ArrayList<>();
            for (String part : v.get("--n").split(",", -1)) {
                batches.add(positiveInt("--n", part.trim(), MAX_BATCH));
            }
            batches = List.copyOf(batches);
        }
        double seconds = d.seconds();
        if (v.containsKey("--seconds")) {
            try {
                seconds = Double.parseDouble(v.get("--seconds"));
            } catch (NumberFormatException e) {
                seconds = Double.NaN;
            }
            if (!(seconds >= 5 && seconds <= 600)) {
                throw new IllegalArgumentException("--seconds: expected a number in [5, 600], got '"
                        + v.get("--seconds") + "'");
            }
        }
        return new Options(in, out, rank, batches, seconds, false);
    }

    private static int positiveInt(String option, String text, int max) {
        int value;
        try {
            value = Integer.parseInt(text);
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException(option + ": expected an integer in 1.." + max + ", got '" + text + "'");
        }
        if (value < 1 || value > max) {
            throw new IllegalArgumentException(option + ": expected an integer in 1.." + max + ", got " + value);
        }
        return value;
    }

    /** The cost model's extra work of the unmerged path: {@code r·(in+out)/(in·out)}, from {@link LoraMath}. */
    static double theory(Options o) {
        return LoraMath.overheadRatio(o.out(), o.in(), o.rank());
    }

    /**
     * The adapter's memory beside {@code W}, in bytes (float32): parameters {@code A [r, in]} and {@code B [out, r]},
     * their gradients, Adam's two moments (when trained with {@code LoraTrainer} and Adam), and the per-forward
     * scratch {@code u = x Aᵀ [n, r]} at the largest batch. Keys in print order.
     */
    static Map<String, Long> memory(Options o) {
        long params = LoraMath.loraParameters(o.out(), o.in(), o.rank());
        int maxN = o.batches().stream().mapToInt(Integer::intValue).max().orElse(1);
        Map<String, Long> m = new LinkedHashMap<>();
        m.put("W [out, in] (frozen, referenced, never copied)", 4L * o.in() * o.out());
        m.put("adapter A [r, in] + B [out, r]", 4 * params);
        m.put("gradients dA + dB (training only)", 4 * params);
        m.put("Adam moments (LoraTrainer with Adam)", 8 * params);
        m.put("scratch u = x·Aᵀ [n, r] at n = " + maxN, 4L * maxN * o.rank());
        return m;
    }

    /** Rounds for a budget: at least {@value #MIN_ROUNDS}, at most 500, else as many as fit at {@code perRoundSeconds} each. */
    static int rounds(double budgetSeconds, double perRoundSeconds) {
        if (!(perRoundSeconds > 0)) {
            return 500;
        }
        return (int) Math.max(MIN_ROUNDS, Math.min(500, Math.floor(budgetSeconds / perRoundSeconds)));
    }

    /**
     * The share of the time left that the next phase gets: forward phases weigh 1 each, the merge phase
     * {@value #MERGE_WEIGHT}.
     *
     * @param forwardPhasesLeft forward phases not yet run, this one included if it is a forward phase
     * @param mergeLeft         whether the merge phase is still to run
     * @param isMerge           whether the next phase is the merge phase
     * @return a fraction in (0, 1]
     */
    static double share(int forwardPhasesLeft, boolean mergeLeft, boolean isMerge) {
        double total = forwardPhasesLeft + (mergeLeft ? MERGE_WEIGHT : 0);
        return (isMerge ? MERGE_WEIGHT : 1) / total;
    }

    /**
     * Runs the probe; the exit code is 0, or 2 for bad arguments (message on {@code err}, usage hint, no trace).
     *
     * @param args the command line
     * @param out  where the results go
     * @param err  where argument errors go
     * @return the process exit code
     */
    static int run(String[] args, PrintStream out, PrintStream err) {
        Options o;
        try {
            o = parse(args);
        } catch (IllegalArgumentException e) {
            err.println("OverheadProbe: " + e.getMessage());
            err.println("Run with --help for the options.");
            return 2;
        }
        if (o.help()) {
            out.print(USAGE);
            return 0;
        }
        measure(o, out);
        return 0;
    }

    /**
     * Entry point; see {@link #USAGE}.
     *
     * @param args the command line
     */
    public static void main(String[] args) {
        int code = run(args, System.out, System.err);
        if (code != 0) {
            System.exit(code);
        }
    }

    // ---------------------------------------------------------------- measuring

    private static final String[] FORWARD = {"plain gemm, preallocated y", "plain gemm + fresh y", "merged forward",
        "unmerged forward", "training step"};

    static void measure(Options o, PrintStream p) {
        long t0 = System.nanoTime();
        // ND4J's start-up banner (a dozen INFO lines) would bury the table; an explicit setting still wins.
        if (System.getProperty("org.slf4j.simpleLogger.log.org.nd4j") == null) {
            System.setProperty("org.slf4j.simpleLogger.log.org.nd4j", "warn");
        }
        double theory = theory(o);
        p.printf(Locale.ROOT, "lora4j OverheadProbe: W [out, in] = %,d × %,d, r = %d, float32, n ∈ %s%n", o.out(),
                o.in(), o.rank(), o.batches());
        double load = java.lang.management.ManagementFactory.getOperatingSystemMXBean().getSystemLoadAverage();
        p.printf(Locale.ROOT, "JDK %s, %d processors (load average %s), ND4J backend %s; budget %.0f s%n",
                System.getProperty("java.runtime.version"), Runtime.getRuntime().availableProcessors(),
                load < 0 ? "unknown" : String.format(Locale.ROOT, "%.1f", load),
                Nd4j.getBackend().getClass().getSimpleName(), o.seconds());
        p.printf(Locale.ROOT, "theory: the unmerged path adds r·(in+out)/(in·out) = %d·%,d/%,d = %.3f %% of the "
                + "base work (ideal unmerged/merged = %.4f)%n%n", o.rank(), (long) o.in() + o.out(),
                (long) o.in() * o.out(), 100 * theory, 1 + theory);

        INDArray w = Fixtures.weight(o.out(), o.in(), 1);
        LoraLinear unmerged = Fixtures.layer(w, o.rank(), 3);
        LoraLinear merged = Fixtures.layer(w.dup(), o.rank(), 3);   // same adapter (same seed), own copy of W
        merged.merge(MergeMode.EXACT);
        long exactRecord = merged.exactMergeBytes();

        long deadline = t0 + (long) (o.seconds() * 1e9);
        int left = o.batches().size();
        for (int n : o.batches()) {
            double budget = share(left--, true, false) * Math.max(0, deadline - System.nanoTime()) / 1e9;
            forwardRounds(o, n, budget, w, merged, unmerged, theory, p);
        }
        mergeRounds(Math.max(0, deadline - System.nanoTime()) / 1e9, unmerged, p);

        p.println("memory (float32):");
        Map<String, Long> mem = memory(o);
        long wBytes = 4L * o.in() * o.out();
        mem.forEach((k, v) -> p.printf(Locale.ROOT, "  %-52s %14s  %s%n", k, bytes(v),
                v == wBytes ? "" : String.format(Locale.ROOT, "%7.3f %% of W", 100.0 * v / wBytes)));
        p.printf(Locale.ROOT, "  %-52s %14s  %7.3f %% of W (measured: LoraLinear.exactMergeBytes())%n",
                "exact-merge record while merged (EXACT)", bytes(exactRecord), 100.0 * exactRecord / wBytes);
        p.printf(Locale.ROOT, "  %-52s %14s%n", "merged layer beyond W (FAST, or EXACT but its record)", "0 B");
        p.printf(Locale.ROOT, "%nTotal wall time %.1f s%n", (System.nanoTime() - t0) / 1e9);
    }

    private static void forwardRounds(Options o, int n, double budget, INDArray w, LoraLinear merged,
            LoraLinear unmerged, double theory, PrintStream p) {
        INDArray x = Fixtures.uniform(2 + n, 1.0, n, o.in());
        INDArray y = Nd4j.createUninitialized(DataType.FLOAT, n, o.out());
        INDArray g = Fixtures.gaussian(4 + n, n, o.out());
        Samples[] s = new Samples[FORWARD.length];
        for (int v = 0; v < s.length; v++) {
            s[v] = new Samples();
        }
        long start = System.nanoTime();
        round(0, w, x, y, g, merged, unmerged, null);    // warm-up; the second round estimates a round's time
        long warm = System.nanoTime();
        round(1, w, x, y, g, merged, unmerged, null);
        long now = System.nanoTime();
        int rounds = rounds(budget - (now - start) / 1e9, (now - warm) / 1e9);
        for (int i = 0; i < rounds; i++) {
            round(i, w, x, y, g, merged, unmerged, s);
        }
        times(p, "n = " + n, rounds, "µs", FORWARD, s);
        ratio(p, "merged / plain (preallocated y)", s[2].dividedBy(s[0]), "ideal 1 (one gemm, plus allocating y)");
        ratio(p, "merged / plain + fresh y", s[2].dividedBy(s[1]), "ideal 1");
        ratio(p, "unmerged / merged", s[3].dividedBy(s[2]),
                String.format(Locale.ROOT, "theory 1 + r·(in+out)/(in·out) = %.4f", 1 + theory));
        ratio(p, "training step / merged forward", s[4].dividedBy(s[2]),
                String.format(Locale.ROOT, "theory ≈ %.3f (x·Wᵀ and g·W, plus 3 thin gemms)", 2 + 2 * theory));
        p.println();
    }

    /**
     * One call of every forward variant, starting with variant {@code first} and wrapping around: rotating the
     * order spreads whatever the first call after another variant pays (waking threads, cold caches) over all of
     * them. Recorded into {@code s} unless it is null.
     */
    private static void round(int first, INDArray w, INDArray x, INDArray y, INDArray g, LoraLinear merged,
            LoraLinear unmerged, Samples[] s) {
        for (int k = 0; k < FORWARD.length; k++) {
            int v = (first + k) % FORWARD.length;
            if (v == 4) {
                unmerged.train();
            }
            long t0 = System.nanoTime();
            switch (v) {
                case 0 -> Nd4j.gemm(x, w, y, false, true, 1.0, 0.0);
                case 1 -> Nd4j.gemm(x, w, Nd4j.createUninitialized(DataType.FLOAT, x.rows(), w.rows()), false, true,
                        1.0, 0.0);
                case 2 -> merged.forward(x);
                case 3 -> unmerged.forward(x);
                default -> {
                    unmerged.forward(x);
                    unmerged.backward(g);
                    unmerged.zeroGrad();
                }
            }
            long t1 = System.nanoTime();
            if (v == 4) {
                unmerged.eval();
            }
            if (s != null) {
                s[v].add((t1 - t0) / 1e3);
            }
        }
    }

    private static void mergeRounds(double budget, LoraLinear layer, PrintStream p) {
        LoraAdapter adapter = layer.adapter(LoraLinear.DEFAULT_ADAPTER);
        INDArray w = layer.weight().dup();   // the reference gemm's own W: the layer's stays as it was
        String[] names = {"merge EXACT", "unmerge EXACT", "merge FAST", "unmerge FAST", "reference gemm W += s·B·A",
            "reference gemm W −= s·B·A"};
        Samples[] s = new Samples[names.length];
        for (int v = 0; v < s.length; v++) {
            s[v] = new Samples();
        }
        long warm = System.nanoTime();
        mergeRound(layer, adapter, w, null);
        double once = (System.nanoTime() - warm) / 1e9;
        int rounds = Math.min(rounds(budget - once, once), 30);
        for (int i = 0; i < rounds; i++) {
            mergeRound(layer, adapter, w, s);
        }
        times(p, "merge / unmerge (independent of n)", rounds, "ms", names, s);
        ratio(p, "merge EXACT / reference gemm", s[0].dividedBy(s[4]), "bit-exact unmerge; ideal ≥ 1");
        ratio(p, "unmerge EXACT / reference gemm", s[1].dividedBy(s[5]), "");
        ratio(p, "merge FAST / reference gemm", s[2].dividedBy(s[4]), "ideal 1 (one gemm)");
        ratio(p, "unmerge FAST / reference gemm", s[3].dividedBy(s[5]), "ideal 1 (one gemm)");
        p.println();
    }

    private static void mergeRound(LoraLinear layer, LoraAdapter adapter, INDArray w, Samples[] s) {
        long t0 = System.nanoTime();
        layer.merge(MergeMode.EXACT);
        long t1 = System.nanoTime();
        layer.unmerge();
        long t2 = System.nanoTime();
        layer.merge(MergeMode.FAST);
        long t3 = System.nanoTime();
        layer.unmerge();
        long t4 = System.nanoTime();
        // The reference works on its own copy of W: plus then minus may leave an ulp there, never in the layer.
        Nd4j.gemm(adapter.b(), adapter.a(), w, false, false, adapter.scaling(), 1.0);
        long t5 = System.nanoTime();
        Nd4j.gemm(adapter.b(), adapter.a(), w, false, false, -adapter.scaling(), 1.0);
        long t6 = System.nanoTime();
        if (s != null) {
            long[] t = {t0, t1, t2, t3, t4, t5, t6};
            for (int v = 0; v < s.length; v++) {
                s[v].add((t[v + 1] - t[v]) / 1e3);
            }
        }
    }

    /** One phase's header, a line per variant (median and quartiles, in µs or ms), and the ratios' header. */
    private static void times(PrintStream p, String phase, int rounds, String unit, String[] names, Samples[] s) {
        p.printf(Locale.ROOT, "%s: %d interleaved rounds%s; times in %s, median [25th–75th percentile]%n", phase,
                rounds, few(rounds), unit);
        double scale = unit.equals("ms") ? 1e3 : 1;
        for (int v = 0; v < s.length; v++) {
            p.printf(Locale.ROOT, "  %-28s %12s  [%s – %s]%n", names[v], num(s[v].median() / scale),
                    num(s[v].p25() / scale), num(s[v].p75() / scale));
        }
        p.println("  ratios: median of the per-round ratios [25th–75th percentile]");
    }

    /** A warning for too few rounds to trust the quartiles. */
    static String few(int rounds) {
        return rounds < 10 ? " (few: the machine is slow or busy; --seconds gives more)" : "";
    }

    private static void ratio(PrintStream p, String label, Samples r, String note) {
        p.printf(Locale.ROOT, "    %-34s %7.3f  [%.3f – %.3f]  %s%n", label, r.median(), r.p25(), r.p75(), note);
    }

    private static String num(double v) {
        return String.format(Locale.ROOT, v < 1e4 ? "%,.2f" : "%,.1f", v);
    }

    /** Bytes in B, KiB, MiB or GiB with one decimal. */
    static String bytes(long b) {
        if (b < 1024) {
            return b + " B";
        }
        String[] units = {"KiB", "MiB", "GiB"};
        double v = b;
        int u = -1;
        while (v >= 1024 && u < units.length - 1) {
            v /= 1024;
            u++;
        }
        return String.format(Locale.ROOT, "%.1f %s", v, units[u]);
    }
}
