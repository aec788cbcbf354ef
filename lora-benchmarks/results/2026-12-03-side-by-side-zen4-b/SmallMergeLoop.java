package io.github.lora4j;

import io.github.lora4j.benchmarks.Fixtures;
import java.util.Arrays;

/**
 * 64 × 64, r = 8: a loop of merge + unmerge pairs through LoraLinear for {@code args[0]} seconds, mode {@code args[1]}
 * (EXACT or FAST), with the median pair time; with {@code args[2]} it first runs that many pairs at 4096² (and 16× as
 * many at 1024²), as the side-by-side grid does before its 64 × 64 shape. Run under jfr to see where the time goes.
 */
public class SmallMergeLoop {
    public static void main(String[] args) {
        int d = 64, r = 8;
        long seconds = Long.parseLong(args[0]);
        String mode = args.length > 1 ? args[1] : "EXACT";
        LoraLinear layer = LoraLinear.wrap(Fixtures.weight(d, 7), Fixtures.uniform(8, 0.1, d), Fixtures.config(r));
        Fixtures.addRealisticAdapter(layer, LoraLinear.DEFAULT_ADAPTER, 9);
        MergeMode m = MergeMode.valueOf(mode);
        if (args.length > 2) {          // first run the pass on wide layers, as the side-by-side grid does
            for (int w : new int[] {1024, 4096}) {
                LoraLinear big = LoraLinear.wrap(Fixtures.weight(w, 7), null, Fixtures.config(r));
                Fixtures.addRealisticAdapter(big, LoraLinear.DEFAULT_ADAPTER, 9);
                for (int i = 0; i < Integer.parseInt(args[2]) * (4096 / w) * (4096 / w); i++) {
                    big.merge(m);
                    big.unmerge();
                }
            }
        }
        long end = System.nanoTime() + seconds * 1_000_000_000L;
        long[] t = new long[200_000];
        int k = 0;
        while (System.nanoTime() < end) {
            long t0 = System.nanoTime();
            layer.merge(m);
            layer.unmerge();
            t[k++ % t.length] = System.nanoTime() - t0;
        }
        long[] s = Arrays.copyOf(t, Math.min(k, t.length));
        Arrays.sort(s);
        System.out.printf("%s pairs: %d, median %.2f us, p25 %.2f, p75 %.2f%n", mode, k, s[s.length / 2] / 1e3,
                s[s.length / 4] / 1e3, s[3 * s.length / 4] / 1e3);
    }
}
