package io.github.lora4j;

import io.github.lora4j.benchmarks.Fixtures;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * Unmerged against merged forward at 4096², r = 8, n = 512, into fresh outputs and into a reused one, rounds
 * interleaved, with the process's minor page faults per call (field 10 of /proc/self/stat).
 */
public class UnmergedProbe {
    interface Body { void run(); }

    static long minorFaults() {
        try {
            String s = Files.readString(Path.of("/proc/self/stat"));
            return Long.parseLong(s.substring(s.lastIndexOf(')') + 2).split(" ")[7]);
        } catch (Exception e) {
            return -1;
        }
    }

    static String time(Body b, int reps) {
        long[] t = new long[reps];
        long f0 = minorFaults();
        for (int i = 0; i < reps; i++) { long t0 = System.nanoTime(); b.run(); t[i] = System.nanoTime() - t0; }
        long faults = minorFaults() - f0;
        Arrays.sort(t);
        return String.format("%.1f [%.1f, %.1f] ms, %d faults/call", t[reps / 2] / 1e6, t[reps / 4] / 1e6,
                t[3 * reps / 4] / 1e6, faults / reps);
    }

    public static void main(String[] args) {
        int d = 4096, r = 8, n = 512;
        long seed = d * 1000L + r * 10L + n;
        INDArray b = Fixtures.uniform(seed + 1, 1.0 / Math.sqrt(d), d);
        INDArray x = Fixtures.gaussian(seed + 2, n, d);
        LoraLinear unmerged = LoraLinear.wrap(Fixtures.weight(d, seed), b, Fixtures.config(r));
        Fixtures.addRealisticAdapter(unmerged, LoraLinear.DEFAULT_ADAPTER, seed + 4);
        LoraLinear merged = LoraLinear.wrap(Fixtures.weight(d, seed), b, Fixtures.config(r));
        Fixtures.addRealisticAdapter(merged, LoraLinear.DEFAULT_ADAPTER, seed + 4);
        merged.merge(MergeMode.FAST);
        INDArray y = Nd4j.createUninitialized(x.dataType(), n, d);
        for (int round = 0; round < 3; round++) {
            System.out.println("round " + round);
            System.out.println("  merged   " + time(() -> merged.forward(x), 10));
            System.out.println("  unmerged " + time(() -> unmerged.forward(x), 10));
            System.out.println("  merged   into " + time(() -> merged.forwardInto(x, y), 10));
            System.out.println("  unmerged into " + time(() -> unmerged.forwardInto(x, y), 10));
        }
    }
}
