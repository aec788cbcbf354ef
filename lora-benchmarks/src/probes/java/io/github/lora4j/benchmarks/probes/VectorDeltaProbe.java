package io.github.lora4j.benchmarks.probes;

import java.io.PrintStream;
import java.util.Arrays;
import java.util.Random;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

/**
 * What it shows: the rate of the exact merge's Δ loop, {@code acc += c0·v0 + c1·v1 + c2·v2 + c3·v3} (twice, r = 8)
 * over a row of {@code len} floats, written with the Vector API against the scalar loop the JIT auto-vectorises
 * (ExactFloatPass's shape); both evaluate the same fma chain per element, so the bits must agree. One thread, 4
 * rounds, in GFLOP/s.
 *
 * <p>Its run: {@code lora-benchmarks/results/2026-12-03-side-by-side-zen4/README.md}, item 4: on JDK 17 the
 * auto-vectorised loop reaches 35–41 GFLOP/s and the Vector API 37–39: no gain from this form alone.
 *
 * <pre>
 * java --add-modules jdk.incubator.vector -cp lora-benchmarks/target/benchmarks.jar \
 *     io.github.lora4j.benchmarks.probes.VectorDeltaProbe 1024
 * </pre>
 * Arguments: {@code len} (row length), optionally {@code work} (floats processed per round and loop, default
 * 400,000,000). Needs {@code --add-modules jdk.incubator.vector} (an incubator module in JDK 17 through 25).
 */
public final class VectorDeltaProbe {

    private static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;

    private VectorDeltaProbe() {
    }

    static void four(float c0, float c1, float c2, float c3, float[] v0, float[] v1, float[] v2, float[] v3,
            float[] acc, int len) {
        int j = 0;
        for (; j <= len - S.length(); j += S.length()) {
            FloatVector a = FloatVector.fromArray(S, acc, j);
            a = FloatVector.fromArray(S, v0, j).fma(FloatVector.broadcast(S, c0), a);
            a = FloatVector.fromArray(S, v1, j).fma(FloatVector.broadcast(S, c1), a);
            a = FloatVector.fromArray(S, v2, j).fma(FloatVector.broadcast(S, c2), a);
            a = FloatVector.fromArray(S, v3, j).fma(FloatVector.broadcast(S, c3), a);
            a.intoArray(acc, j);
        }
        for (; j < len; j++) {
            acc[j] = Math.fma(c3, v3[j], Math.fma(c2, v2[j], Math.fma(c1, v1[j], Math.fma(c0, v0[j], acc[j]))));
        }
    }

    static void scalar(float c0, float c1, float c2, float c3, float[] v0, float[] v1, float[] v2, float[] v3,
            float[] acc, int len) {
        for (int j = 0; j < len; j++) {
            acc[j] = Math.fma(c3, v3[j], Math.fma(c2, v2[j], Math.fma(c1, v1[j], Math.fma(c0, v0[j], acc[j]))));
        }
    }

    /**
     * Runs the probe from the command line.
     *
     * @param args {@code len [work]}
     */
    public static void main(String[] args) {
        run(System.out, args);
    }

    /**
     * Runs the probe.
     *
     * @param out  where to print its lines
     * @param args {@code len [work]}
     */
    public static void run(PrintStream out, String... args) {
        int len = Probes.positive("VectorDeltaProbe", args, 0, "len", null);
        long work = Probes.positive("VectorDeltaProbe", args, 1, "work", 400_000_000);
        float[][] v = new float[8][len];
        float[] acc = new float[len];
        float[] acc2 = new float[len];
        Random rnd = new Random(1);
        for (float[] x : v) {
            for (int j = 0; j < len; j++) {
                x[j] = rnd.nextFloat() - 0.5f;
            }
        }
        long calls = Math.max(1, work / len);
        out.println("species " + S);
        for (int round = 0; round < 4; round++) {
            long t0 = System.nanoTime();
            for (long q = 0; q < calls; q++) {
                four(0.1f, 0.2f, 0.3f, 0.4f, v[0], v[1], v[2], v[3], acc, len);
                four(0.1f, 0.2f, 0.3f, 0.4f, v[4], v[5], v[6], v[7], acc, len);
                if ((q & 1023) == 0) {
                    Arrays.fill(acc, 0f);
                }
            }
            double s = (System.nanoTime() - t0) / 1e9;
            long t1 = System.nanoTime();
            for (long q = 0; q < calls; q++) {
                scalar(0.1f, 0.2f, 0.3f, 0.4f, v[0], v[1], v[2], v[3], acc2, len);
                scalar(0.1f, 0.2f, 0.3f, 0.4f, v[4], v[5], v[6], v[7], acc2, len);
                if ((q & 1023) == 0) {
                    Arrays.fill(acc2, 0f);
                }
            }
            double s1 = (System.nanoTime() - t1) / 1e9;
            out.printf("len %d: vector API %.1f GFLOP/s, auto-vectorised %.1f GFLOP/s; same bits %b%n", len,
                    2.0 * 8 * len * calls / s / 1e9, 2.0 * 8 * len * calls / s1 / 1e9, Arrays.equals(acc, acc2));
        }
    }
}
