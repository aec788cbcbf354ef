import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

public class VectorDeltaProbe {
    static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    static void four(float c0, float c1, float c2, float c3, float[] v0, float[] v1, float[] v2, float[] v3, float[] acc, int len) {
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
    static void scalar(float c0, float c1, float c2, float c3, float[] v0, float[] v1, float[] v2, float[] v3, float[] acc, int len) {
        for (int j = 0; j < len; j++) {
            acc[j] = Math.fma(c3, v3[j], Math.fma(c2, v2[j], Math.fma(c1, v1[j], Math.fma(c0, v0[j], acc[j]))));
        }
    }
    public static void main(String[] a) {
        int len = Integer.parseInt(a[0]);
        float[][] v = new float[8][len];
        float[] acc = new float[len], acc2 = new float[len];
        java.util.Random rnd = new java.util.Random(1);
        for (float[] x : v) for (int j = 0; j < len; j++) x[j] = rnd.nextFloat() - 0.5f;
        long calls = 400_000_000L / len;
        System.out.println("species " + S);
        for (int round = 0; round < 4; round++) {
            long t0 = System.nanoTime();
            for (long q = 0; q < calls; q++) {
                four(0.1f, 0.2f, 0.3f, 0.4f, v[0], v[1], v[2], v[3], acc, len);
                four(0.1f, 0.2f, 0.3f, 0.4f, v[4], v[5], v[6], v[7], acc, len);
                if ((q & 1023) == 0) java.util.Arrays.fill(acc, 0f);
            }
            double s = (System.nanoTime() - t0) / 1e9;
            long t1 = System.nanoTime();
            for (long q = 0; q < calls; q++) {
                scalar(0.1f, 0.2f, 0.3f, 0.4f, v[0], v[1], v[2], v[3], acc2, len);
                scalar(0.1f, 0.2f, 0.3f, 0.4f, v[4], v[5], v[6], v[7], acc2, len);
                if ((q & 1023) == 0) java.util.Arrays.fill(acc2, 0f);
            }
            double s1 = (System.nanoTime() - t1) / 1e9;
            System.out.printf("len %d: vector API %.1f GFLOP/s, auto-vectorised %.1f GFLOP/s; same bits %b%n", len,
                    2.0 * 8 * len * calls / s / 1e9, 2.0 * 8 * len * calls / s1 / 1e9, java.util.Arrays.equals(acc, acc2));
        }
    }
}
