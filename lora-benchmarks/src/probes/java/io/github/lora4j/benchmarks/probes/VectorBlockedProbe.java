package io.github.lora4j.benchmarks.probes;

import java.io.PrintStream;
import java.util.Arrays;
import java.util.Random;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

/**
 * What it shows: Δ rows for a tile, {@code acc_i = Σ_k coef[i, k]·v_k} with r = 8, by the auto-vectorised one-row
 * loop (today's ExactFloatPass shape) against a Vector API kernel that keeps four rows' accumulators in registers
 * and loads each {@code v_k} once per four rows. Both evaluate the same fma chain per element, so the bits must
 * agree. One thread, in GFLOP/s.
 *
 * <p>Its run: {@code lora-benchmarks/results/2026-12-03-side-by-side-zen4/README.md}, item 4: on JDK 17 the one-row
 * loop 35–41 GFLOP/s, the four-row kernel 36–50; on JDK 25 28–39 and 43–61. The spread between processes is as
 * large as the gain, so the four-row kernel's 1.2–1.5× is a hint, not a result.
 *
 * <pre>
 * java --add-modules jdk.incubator.vector -cp lora-benchmarks/target/benchmarks.jar \
 *     io.github.lora4j.benchmarks.probes.VectorBlockedProbe
 * </pre>
 * Arguments, all optional: {@code len} (tile width, default 1024), {@code rows} (a multiple of 4, default 64),
 * {@code work} (about 200,000,000 multiply-adds a round at the defaults, the unit of the sweeps count), {@code rounds}
 * (4). Needs {@code --add-modules jdk.incubator.vector} (an incubator module in JDK 17 through 25).
 */
public final class VectorBlockedProbe {

    private static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    private static final int R = 8;

    private VectorBlockedProbe() {
    }

    static void oneRow(float[] coef, int c, float[][] v, float[] acc, int len) {
        float c0 = coef[c];
        float c1 = coef[c + 1];
        float c2 = coef[c + 2];
        float c3 = coef[c + 3];
        for (int j = 0; j < len; j++) {
            acc[j] = Math.fma(c3, v[3][j], Math.fma(c2, v[2][j], Math.fma(c1, v[1][j], c0 * v[0][j])));
        }
        c0 = coef[c + 4];
        c1 = coef[c + 5];
        c2 = coef[c + 6];
        c3 = coef[c + 7];
        for (int j = 0; j < len; j++) {
            acc[j] = Math.fma(c3, v[7][j], Math.fma(c2, v[6][j], Math.fma(c1, v[5][j], Math.fma(c0, v[4][j], acc[j]))));
        }
    }

    static void fourRows(float[] coef, int row, float[][] v, float[][] acc, int len) {
        for (int j = 0; j <= len - S.length(); j += S.length()) {
            FloatVector v0 = FloatVector.fromArray(S, v[0], j);
            FloatVector a0 = v0.mul(coef[row * R]);
            FloatVector a1 = v0.mul(coef[(row + 1) * R]);
            FloatVector a2 = v0.mul(coef[(row + 2) * R]);
            FloatVector a3 = v0.mul(coef[(row + 3) * R]);
            for (int k = 1; k < R; k++) {
                FloatVector vk = FloatVector.fromArray(S, v[k], j);
                a0 = vk.fma(FloatVector.broadcast(S, coef[row * R + k]), a0);
                a1 = vk.fma(FloatVector.broadcast(S, coef[(row + 1) * R + k]), a1);
                a2 = vk.fma(FloatVector.broadcast(S, coef[(row + 2) * R + k]), a2);
                a3 = vk.fma(FloatVector.broadcast(S, coef[(row + 3) * R + k]), a3);
            }
            a0.intoArray(acc[0], j);
            a1.intoArray(acc[1], j);
            a2.intoArray(acc[2], j);
            a3.intoArray(acc[3], j);
        }
    }

    /**
     * Runs the probe from the command line.
     *
     * @param args {@code [len [rows [work [rounds]]]]}
     */
    public static void main(String[] args) {
        run(System.out, args);
    }

    /**
     * Runs the probe.
     *
     * @param out  where to print its lines
     * @param args {@code [len [rows [work [rounds]]]]}
     */
    public static void run(PrintStream out, String... args) {
        int len = Probes.positive("VectorBlockedProbe", args, 0, "len", 1024);
        int rows = Probes.positive("VectorBlockedProbe", args, 1, "rows", 64);
        long work = Probes.positive("VectorBlockedProbe", args, 2, "work", 200_000_000);
        int rounds = Probes.positive("VectorBlockedProbe", args, 3, "rounds", 4);
        if (rows % 4 != 0 || len % S.length() != 0) {
            throw new IllegalArgumentException("VectorBlockedProbe: rows (" + rows + ") must be a multiple of 4 and"
                    + " len (" + len + ") of the vector length (" + S.length() + " floats here)");
        }
        Random rnd = new Random(1);
        float[][] v = new float[R][len];
        for (float[] x : v) {
            for (int j = 0; j < len; j++) {
                x[j] = rnd.nextFloat() - 0.5f;
            }
        }
        float[] coef = new float[rows * R];
        for (int i = 0; i < coef.length; i++) {
            coef[i] = rnd.nextFloat() - 0.5f;
        }
        float[] one = new float[len];
        float[][] four = new float[4][len];
        long sweeps = Math.max(1, work / ((long) len * rows) * R / 8);
        for (int round = 0; round < rounds; round++) {
            long t0 = System.nanoTime();
            for (long q = 0; q < sweeps; q++) {
                for (int i = 0; i < rows; i++) {
                    oneRow(coef, i * R, v, one, len);
                }
            }
            double s = (System.nanoTime() - t0) / 1e9;
            t0 = System.nanoTime();
            for (long q = 0; q < sweeps; q++) {
                for (int i = 0; i < rows; i += 4) {
                    fourRows(coef, i, v, four, len);
                }
            }
            double s4 = (System.nanoTime() - t0) / 1e9;
            // the last four-row call covered rows - 4 .. rows - 1: its first row against the one-row loop's
            oneRow(coef, (rows - 4) * R, v, one, len);
            double flops = 2.0 * R * len * rows * sweeps;
            out.printf("r=8: one row auto-vectorised %.1f GFLOP/s | four rows, Vector API %.1f GFLOP/s | same bits %b%n",
                    flops / s / 1e9, flops / s4 / 1e9, Arrays.equals(one, four[0]));
        }
    }
}
