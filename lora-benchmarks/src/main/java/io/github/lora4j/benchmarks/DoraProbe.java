package io.github.lora4j.benchmarks;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.MergeMode;
import java.io.PrintStream;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * What DoRA costs against plain LoRA on the same layer, interleaved in one process:
 *
 * <pre>
 * java -cp lora-benchmarks/target/benchmarks.jar io.github.lora4j.benchmarks.DoraProbe [--d 1024,4096] [--r 8] \
 *     [--n 1,64,512] [--seconds 30]
 * </pre>
 *
 * <p>Per {@code (d, n)}, one call of each variant per round, in rotating order: the LoRA forward (eval, unmerged), the
 * DoRA forward with its norms {@code ‖W + s·B·A‖_row} cached (inference: A and B do not change), the DoRA forward
 * with its norms recomputed (what every training forward pays: {@code P = W Aᵀ}, one thin gemm over W), and a
 * training step of each (a no-op {@code updateTrainable}, which is what drops DoRA's norms after an optimizer
 * step, then forward, backward with {@code dL/dx}, zeroGrad). Then, per {@code d}, an EXACT merge + unmerge pair of
 * each and DoRA's merge record. Times are medians with the interquartile range; ratios are medians of the per-round
 * ratios. W {@code [d, d]} float32 {@code U(±1/sqrt(d))}, a bias, r = 8, alpha = 2r, a trained-size adapter
 * ({@link Fixtures#RELATIVE_UPDATE}) and a magnitude 1 % off the norms.
 */
public final class DoraProbe {

    private static final String[] VARIANTS = {"LoRA forward", "DoRA forward, norms cached",
        "DoRA forward, norms recomputed", "LoRA training step", "DoRA training step"};

    private DoraProbe() {
    }

    /**
     * Entry point: {@code --d}, {@code --r}, {@code --n}, {@code --seconds} (per {@code (d, n)} cell).
     *
     * @param args the command line
     */
    public static void main(String[] args) {
        List<Integer> ds = List.of(1024, 4096);
        int r = 8;
        List<Integer> ns = List.of(1, 64, 512);
        double seconds = 20;
        for (int i = 0; i + 1 < args.length; i += 2) {
            switch (args[i]) {
                case "--d" -> ds = ints(args[i + 1]);
                case "--r" -> r = Integer.parseInt(args[i + 1]);
                case "--n" -> ns = ints(args[i + 1]);
                case "--seconds" -> seconds = Double.parseDouble(args[i + 1]);
                default -> throw new IllegalArgumentException("unknown option " + args[i]
                        + "; expected --d, --r, --n or --seconds");
            }
        }
        if (System.getProperty("org.slf4j.simpleLogger.log.org.nd4j") == null) {
            System.setProperty("org.slf4j.simpleLogger.log.org.nd4j", "warn");
        }
        run(ds, r, ns, seconds, System.out);
    }

    private static List<Integer> ints(String csv) {
        List<Integer> v = new ArrayList<>();
        for (String s : csv.split(",")) {
            v.add(Integer.parseInt(s.trim()));
        }
        return v;
    }

    static void run(List<Integer> ds, int r, List<Integer> ns, double seconds, PrintStream p) {
        p.printf(Locale.ROOT, "lora4j DoraProbe: W [d, d] float32 with bias, r = %d, JDK %s, %d processors, load %s%n",
                r, System.getProperty("java.runtime.version"), Runtime.getRuntime().availableProcessors(), load());
        for (int d : ds) {
            INDArray w = Fixtures.weight(d, 1);
            INDArray bias = Fixtures.uniform(2, 1.0 / Math.sqrt(d), d);
            LoraLinear lora = LoraLinear.wrap(w, bias, Fixtures.config(r));
            Fixtures.addRealisticAdapter(lora, LoraLinear.DEFAULT_ADAPTER, 3);
            LoraConfig doraConfig = Fixtures.config(r).toBuilder().useDora(true).build();
            LoraLinear dora = LoraLinear.wrap(w, bias, doraConfig);
            Fixtures.addRealisticAdapter(dora, LoraLinear.DEFAULT_ADAPTER, 3);
            INDArray m = dora.adapter(LoraLinear.DEFAULT_ADAPTER).magnitude();
            dora.setAdapterWeights(LoraLinear.DEFAULT_ADAPTER, lora.loraA("default").dup(),
                    lora.loraB("default").dup(), m.mul(Fixtures.gaussian(5, d).muli(0.01).addi(1.0)));
            for (int n : ns) {
                cell(d, n, lora, dora, seconds, p);
            }
            merges(d, lora, dora, seconds / 2, p);
        }
        p.printf(Locale.ROOT, "load after: %s%n", load());
    }

    private static void cell(int d, int n, LoraLinear lora, LoraLinear dora, double seconds, PrintStream p) {
        INDArray x = Fixtures.gaussian(10 + n, n, d);
        INDArray g = Fixtures.gaussian(11 + n, n, d);
        Samples[] s = new Samples[VARIANTS.length];
        for (int v = 0; v < s.length; v++) {
            s[v] = new Samples();
        }
        long start = System.nanoTime();
        round(0, x, g, lora, dora, null);
        round(1, x, g, lora, dora, null);
        long deadline = start + (long) (seconds * 1e9);
        int rounds = 0;
        while (rounds < 5 || (System.nanoTime() < deadline && rounds < 400)) {
            round(rounds, x, g, lora, dora, s);
            rounds++;
        }
        p.printf(Locale.ROOT, "%nd = %d, n = %d: %d interleaved rounds; µs, median [25th – 75th percentile]%n", d, n,
                rounds);
        for (int v = 0; v < s.length; v++) {
            p.printf(Locale.ROOT, "  %-32s %12.1f  [%.1f – %.1f]%n", VARIANTS[v], s[v].median(), s[v].p25(), s[v].p75());
        }
        ratio(p, "DoRA / LoRA forward (cached)", s[1].dividedBy(s[0]));
        ratio(p, "DoRA / LoRA forward (recomputed)", s[2].dividedBy(s[0]));
        ratio(p, "DoRA / LoRA training step", s[4].dividedBy(s[3]));
    }

    private static void round(int first, INDArray x, INDArray g, LoraLinear lora, LoraLinear dora, Samples[] s) {
        for (int k = 0; k < VARIANTS.length; k++) {
            int v = (first + k) % VARIANTS.length;
            long t0;
            long t1;
            switch (v) {
                case 0 -> {
                    t0 = System.nanoTime();
                    lora.forward(x);
                    t1 = System.nanoTime();
                }
                case 1 -> {
                    dora.forward(x);                                  // norms cached by an earlier call
                    t0 = System.nanoTime();
                    dora.forward(x);
                    t1 = System.nanoTime();
                }
                case 2 -> {
                    t0 = System.nanoTime();
                    dora.updateTrainable(a -> { });                   // what an optimizer step does to the norms
                    dora.forward(x);
                    t1 = System.nanoTime();
                }
                default -> {
                    LoraLinear l = v == 3 ? lora : dora;
                    l.train();
                    t0 = System.nanoTime();
                    l.updateTrainable(a -> { });
                    l.forward(x);
                    l.backward(g);
                    l.zeroGrad();
                    t1 = System.nanoTime();
                    l.eval();
                }
            }
            if (s != null) {
                s[v].add((t1 - t0) / 1e3);
            }
        }
    }

    private static void merges(int d, LoraLinear lora, LoraLinear dora, double seconds, PrintStream p) {
        Samples loraPair = new Samples();
        Samples doraPair = new Samples();
        long deadline = System.nanoTime() + (long) (seconds * 1e9);
        long record = 0;
        for (int i = 0; i < 3 || (System.nanoTime() < deadline && i < 40); i++) {
            long t0 = System.nanoTime();
            lora.merge(MergeMode.EXACT);
            lora.unmerge();
            long t1 = System.nanoTime();
            dora.merge(MergeMode.EXACT);
            record = dora.exactMergeBytes();
            dora.unmerge();
            long t2 = System.nanoTime();
            if (i > 0) {
                loraPair.add((t1 - t0) / 1e3);
                doraPair.add((t2 - t1) / 1e3);
            }
        }
        long loraRecord;
        lora.merge(MergeMode.EXACT);
        loraRecord = lora.exactMergeBytes();
        lora.unmerge();
        long wBytes = 4L * d * d;
        p.printf(Locale.ROOT, "%nd = %d merge + unmerge (EXACT): %d rounds; ms, median [25th – 75th percentile]%n", d,
                loraPair.size());
        p.printf(Locale.ROOT, "  %-32s %12.2f  [%.2f – %.2f]%n", "LoRA", loraPair.median() / 1e3, loraPair.p25() / 1e3,
                loraPair.p75() / 1e3);
        p.printf(Locale.ROOT, "  %-32s %12.2f  [%.2f – %.2f]%n", "DoRA", doraPair.median() / 1e3, doraPair.p25() / 1e3,
                doraPair.p75() / 1e3);
        ratio(p, "DoRA / LoRA merge + unmerge", doraPair.dividedBy(loraPair));
        p.printf(Locale.ROOT, "  merge record while merged: LoRA %.2f %% of W, DoRA %.2f %% of W (factor copies "
                + "included; m 1 %% off the norms)%n", 100.0 * loraRecord / wBytes, 100.0 * record / wBytes);
    }

    private static void ratio(PrintStream p, String label, Samples q) {
        p.printf(Locale.ROOT, "    %-34s %7.3f  [%.3f – %.3f]%n", label, q.median(), q.p25(), q.p75());
    }

    private static String load() {
        double l = java.lang.management.ManagementFactory.getOperatingSystemMXBean().getSystemLoadAverage();
        return l < 0 ? "unknown" : String.format(Locale.ROOT, "%.2f", l);
    }
}
