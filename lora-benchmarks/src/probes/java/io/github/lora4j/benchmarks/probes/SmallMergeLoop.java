package io.github.lora4j.benchmarks.probes;

import io.github.lora4j.LoraLinear;
import io.github.lora4j.MergeMode;
import io.github.lora4j.benchmarks.Fixtures;
import java.io.PrintStream;
import java.util.Arrays;

/**
 * What it shows: the time of a merge + unmerge pair at 64 × 64, r = 8, through {@code LoraLinear}, in a loop for a
 * given number of seconds (median and quartiles of the pairs), optionally after the pass ran on wide layers first
 * (4096² and 1024², as the side-by-side grid does before its 64 × 64 shape). Run it under jfr to see where the time
 * goes.
 *
 * <p>Its run: {@code lora-benchmarks/results/2026-12-03-side-by-side-zen4-b/README.md}, item 5: a 64 × 64 EXACT pair
 * took 13.7–14.0 µs alone but 26.0–33.0 µs after wide merges (the JIT had compiled the pass for 1024-element tiles),
 * and 17.6–19.9 µs once narrow W got its own copies of the pass classes (commit {@code 1a05d31}).
 *
 * <pre>
 * java -cp lora-benchmarks/target/benchmarks.jar io.github.lora4j.benchmarks.probes.SmallMergeLoop 20 EXACT 3
 * </pre>
 * Arguments: {@code seconds} of the timed loop (a decimal), the mode ({@code EXACT} or {@code FAST}, default EXACT),
 * and optionally how many pairs to run at 4096² first (16 times as many at 1024²). Uses lora4j's public API only.
 */
public final class SmallMergeLoop {

    private SmallMergeLoop() {
    }

    /**
     * Runs the probe from the command line.
     *
     * @param args {@code seconds [EXACT|FAST] [wide pairs]}
     */
    public static void main(String[] args) {
        run(System.out, args);
    }

    /**
     * Runs the probe.
     *
     * @param out  where to print its line
     * @param args {@code seconds [EXACT|FAST] [wide pairs]}
     */
    public static void run(PrintStream out, String... args) {
        int d = 64;
        int r = 8;
        double seconds = seconds(args);
        String mode = args.length > 1 ? args[1] : "EXACT";
        MergeMode m = MergeMode.valueOf(mode);
        LoraLinear layer = LoraLinear.wrap(Fixtures.weight(d, 7), Fixtures.uniform(8, 0.1, d), Fixtures.config(r));
        Fixtures.addRealisticAdapter(layer, LoraLinear.DEFAULT_ADAPTER, 9);
        if (args.length > 2) {          // first run the pass on wide layers, as the side-by-side grid does
            int pairs = Probes.positive("SmallMergeLoop", args, 2, "wide pairs", null);
            for (int w : new int[] {1024, 4096}) {
                LoraLinear big = LoraLinear.wrap(Fixtures.weight(w, 7), null, Fixtures.config(r));
                Fixtures.addRealisticAdapter(big, LoraLinear.DEFAULT_ADAPTER, 9);
                for (int i = 0; i < pairs * (4096 / w) * (4096 / w); i++) {
                    big.merge(m);
                    big.unmerge();
                }
            }
        }
        long end = System.nanoTime() + (long) (seconds * 1e9);
        long[] t = new long[200_000];
        int k = 0;
        do {
            long t0 = System.nanoTime();
            layer.merge(m);
            layer.unmerge();
            t[k++ % t.length] = System.nanoTime() - t0;
        } while (System.nanoTime() < end);
        long[] s = Arrays.copyOf(t, Math.min(k, t.length));
        out.printf("%s pairs: %d, median %.2f us, p25 %.2f, p75 %.2f%n", mode, k, Probes.quantile(s, 0.5) / 1e3,
                Probes.quantile(s, 0.25) / 1e3, Probes.quantile(s, 0.75) / 1e3);
    }

    private static double seconds(String[] args) {
        try {
            double s = Double.parseDouble(args.length > 0 ? args[0] : "");
            if (s > 0 && s <= 3600) {
                return s;
            }
        } catch (NumberFormatException notANumber) {
            // refused below
        }
        throw new IllegalArgumentException("SmallMergeLoop: argument 1 (seconds) must be a number in (0, 3600], got "
                + (args.length > 0 ? "'" + args[0] + "'" : "nothing"));
    }
}
