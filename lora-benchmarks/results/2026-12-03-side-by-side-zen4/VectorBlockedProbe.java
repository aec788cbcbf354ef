import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

/**
 * Δ rows for a tile: acc_i = Σ_k coef[i, k]·v_k, r = 8, by the auto-vectorised one-row loop (today's ExactFloatPass
 * shape) against a Vector API kernel that keeps four rows' accumulators in registers and loads each v_k once per four
 * rows. Both evaluate the same fma chain per element, so the bits must agree.
 */
public class VectorBlockedProbe {
    static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    static final int R = 8;

    static void oneRow(float[] coef, int c, float[][] v, float[] acc, int len) {
        float c0 = coef[c], c1 = coef[c + 1], c2 = coef[c + 2], c3 = coef[c + 3];
        for (int j = 0; j < len; j++) acc[j] = Math.fma(c3, v[3][j], Math.fma(c2, v[2][j], Math.fma(c1, v[1][j], c0 * v[0][j])));
        c0 = coef[c + 4]; c1 = coef[c + 5]; c2 = coef[c + 6]; c3 = coef[c + 7];
        for (int j = 0; j < len; j++) acc[j] = Math.fma(c3, v[7][j], Math.fma(c2, v[6][j], Math.fma(c1, v[5][j], Math.fma(c0, v[4][j], acc[j]))));
    }

    static void fourRows(float[] coef, int row, float[][] v, float[][] acc, int len) {
        int j = 0;
        for (; j <= len - S.length(); j += S.length()) {
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
            a0.intoArray(acc[0], j); a1.intoArray(acc[1], j); a2.intoArray(acc[2], j); a3.intoArray(acc[3], j);
        }
    }

    public static void main(String[] a) {
        int len = 1024, rows = 64;
        java.util.Random rnd = new java.util.Random(1);
        float[][] v = new float[R][len];
        for (float[] x : v) for (int j = 0; j < len; j++) x[j] = rnd.nextFloat() - 0.5f;
        float[] coef = new float[rows * R];
        for (int i = 0; i < coef.length; i++) coef[i] = rnd.nextFloat() - 0.5f;
        float[] one = new float[len];
        float[][] four = new float[4][len];
        long sweeps = 200_000_000L / (len * rows) * R / 8;
        for (int round = 0; round < 4; round++) {
            long t0 = System.nanoTime();
            for (long q = 0; q < sweeps; q++) for (int i = 0; i < rows; i++) oneRow(coef, i * R, v, one, len);
            double s = (System.nanoTime() - t0) / 1e9;
            t0 = System.nanoTime();
            for (long q = 0; q < sweeps; q++) for (int i = 0; i < rows; i += 4) fourRows(coef, i, v, four, len);
            double s4 = (System.nanoTime() - t0) / 1e9;
            oneRow(coef, (rows - 4) * R, v, one, len);
            double flops = 2.0 * R * len * rows * sweeps;
            System.out.printf("r=8: one row auto-vectorised %.1f GFLOP/s | four rows, Vector API %.1f GFLOP/s | same bits %b%n",
                    flops / s / 1e9, flops / s4 / 1e9, java.util.Arrays.equals(one, four[0]));
        }
    }
}
