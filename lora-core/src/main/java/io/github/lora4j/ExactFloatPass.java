package io.github.lora4j;

import java.nio.FloatBuffer;
import org.nd4j.linalg.api.ndarray.INDArray;

/** {@link ExactMerge}'s pass over a FLOAT W. {@link ExactDoublePass} is the same code in double. */
final class ExactFloatPass extends ExactMerge.Pass {

    private final FloatBuffer wBuf;
    private final float s;
    /** {@code coef[i·r + k]}: the coefficient of rank term {@code k} in row {@code i}. */
    private final float[] coef;
    /** {@code v[t][k]}: tile {@code t} of rank term {@code k}'s row. */
    private final float[][][] v;
    /** DoRA's factor per row of W ({@code [out, in]}), or null. */
    private float[] rowFactor;
    /** DoRA's factors by tile of columns (W {@code [in, out]}), or null. */
    private float[][] colFactor;

    ExactFloatPass(INDArray w, boolean inOut, INDArray a, INDArray b, double s, boolean fma) {
        super(w, a.rows(), fma);
        this.wBuf = w.data().asNioFloat();
        this.s = (float) s;
        float[] af = (float[]) ExactMerge.elements(a, false);   // [r, in]
        float[] bf = (float[]) ExactMerge.elements(b, false);   // [out, r]
        int r = rank;
        int in = a.columns();
        if (!inOut) {
            coef = bf;                                           // B [out, r]: row i's coefficients are B[i, :]
        } else {
            coef = new float[in * r];                            // A^T [in, r]
            for (int k = 0; k < r; k++) {
                for (int j = 0; j < in; j++) {
                    coef[j * r + k] = af[k * in + j];
                }
            }
        }
        v = new float[tileLength.length][r][];
        for (int k = 0; k < r; k++) {
            for (int t = 0; t < tileLength.length; t++) {
                float[] tile = new float[tileLength[t]];
                for (int j = 0; j < tile.length; j++) {
                    int col = t * ExactMerge.TILE + j;
                    tile[j] = inOut ? bf[col * r + k] : af[k * in + col];   // B[:, k] or A[k, :]
                }
                v[t][k] = tile;
            }
        }
    }

    /** One thread's buffers: W's row and the merged row by tile, a tile's Δ and its round trip. */
    private static final class Buffers extends ExactMerge.Rows {
        final float[][] row;
        final float[][] merged;
        final float[] acc;
        final float[] back;

        Buffers(int[] tileLength) {
            super(tileLength);
            acc = new float[width];
            back = new float[width];
            row = new float[tileLength.length][];
            merged = new float[tileLength.length][];
            for (int t = 0; t < tileLength.length; t++) {
                row[t] = new float[tileLength[t]];
                merged[t] = new float[tileLength[t]];
            }
        }
    }

    @Override
    long factorBytes() {
        return 4L * (rank * ((long) rows + cols) + (rowFactor != null ? rows : colFactor != null ? cols : 0));
    }

    @Override
    void scaleOutputs(double[] c, boolean inOut) {
        if (!inOut) {
            rowFactor = new float[rows];
            for (int i = 0; i < rows; i++) {
                rowFactor[i] = (float) c[i];
            }
            return;
        }
        colFactor = new float[tileLength.length][];
        for (int t = 0; t < tileLength.length; t++) {
            colFactor[t] = new float[tileLength[t]];
            for (int j = 0; j < tileLength[t]; j++) {
                colFactor[t][j] = (float) c[t * ExactMerge.TILE + j];
            }
        }
    }

    @Override
    ExactMerge.Rows rowBuffers() {
        return new Buffers(tileLength);
    }

    /**
     * {@code acc = Σ_k coef[c + k]·v_k} over one tile, four rank terms per loop; the same code for merge and unmerge.
     * (One output array per loop: the JIT of JDK 17 vectorises this loop, at 50 GFLOP/s per core here, but not one
     * that updates two or four rows' outputs from the same factor loads, which runs scalar at 14.)
     */
    private void delta(int c, float[][] vt, float[] acc, int len) {
        int k = 0;
        int r = rank;
        if (r >= 4) {
            float c0 = coef[c];
            float c1 = coef[c + 1];
            float c2 = coef[c + 2];
            float c3 = coef[c + 3];
            float[] v0 = vt[0];
            float[] v1 = vt[1];
            float[] v2 = vt[2];
            float[] v3 = vt[3];
            if (fma) {
                for (int j = 0; j < len; j++) {
                    acc[j] = Math.fma(c3, v3[j], Math.fma(c2, v2[j], Math.fma(c1, v1[j], c0 * v0[j])));
                }
            } else {
                for (int j = 0; j < len; j++) {
                    acc[j] = (c0 * v0[j] + c1 * v1[j]) + (c2 * v2[j] + c3 * v3[j]);
                }
            }
            k = 4;
        } else {
            java.util.Arrays.fill(acc, 0, len, 0f);
        }
        for (; k + 3 < r; k += 4) {
            float c0 = coef[c + k];
            float c1 = coef[c + k + 1];
            float c2 = coef[c + k + 2];
            float c3 = coef[c + k + 3];
            float[] v0 = vt[k];
            float[] v1 = vt[k + 1];
            float[] v2 = vt[k + 2];
            float[] v3 = vt[k + 3];
            if (fma) {
                for (int j = 0; j < len; j++) {
                    acc[j] = Math.fma(c3, v3[j], Math.fma(c2, v2[j], Math.fma(c1, v1[j], Math.fma(c0, v0[j], acc[j]))));
                }
            } else {
                for (int j = 0; j < len; j++) {
                    acc[j] += (c0 * v0[j] + c1 * v1[j]) + (c2 * v2[j] + c3 * v3[j]);
                }
            }
        }
        for (; k < r; k++) {
            float ck = coef[c + k];
            float[] vk = vt[k];
            if (fma) {
                for (int j = 0; j < len; j++) {
                    acc[j] = Math.fma(ck, vk[j], acc[j]);
                }
            } else {
                for (int j = 0; j < len; j++) {
                    acc[j] += ck * vk[j];
                }
            }
        }
    }

    private void read(int i, int t, float[] tile) {
        int j0 = t * ExactMerge.TILE;
        if (colStride == 1) {
            wBuf.get(at(i, j0), tile, 0, tile.length);
        } else {
            for (int j = 0; j < tile.length; j++) {
                tile[j] = wBuf.get(at(i, j0 + j));
            }
        }
    }

    private void write(int i, int t, float[] tile) {
        int j0 = t * ExactMerge.TILE;
        if (colStride == 1) {
            wBuf.put(at(i, j0), tile, 0, tile.length);
        } else {
            for (int j = 0; j < tile.length; j++) {
                wBuf.put(at(i, j0 + j), tile[j]);
            }
        }
    }

    @Override
    ExactMerge.Failure mergeRow(int i, MergeRecord record, ExactMerge.Rows rows) {
        Buffers buffers = (Buffers) rows;
        float[] acc = buffers.acc;
        float[] back = buffers.back;
        int[] pos = buffers.pos;
        int mark = record.size();
        int c = i * rank;
        for (int t = 0; t < buffers.row.length; t++) {
            float[] w = buffers.row[t];
            float[] m = buffers.merged[t];
            int len = w.length;
            read(i, t, w);
            delta(c, v[t], acc, len);
            float sf = s;
            // The merged value and its round trip m - d, in one branch-free loop the JIT vectorises.
            if (rowFactor == null && colFactor == null) {
                for (int j = 0; j < len; j++) {
                    float d = sf * acc[j];
                    float mj = w[j] + d;
                    m[j] = mj;
                    back[j] = mj - d;
                }
            } else if (rowFactor != null) {
                float f = rowFactor[i];                           // DoRA: m = f·(w + d), back = m / f − d
                for (int j = 0; j < len; j++) {
                    float d = sf * acc[j];
                    float mj = f * (w[j] + d);
                    m[j] = mj;
                    back[j] = mj / f - d;
                }
            } else {
                float[] f = colFactor[t];
                for (int j = 0; j < len; j++) {
                    float d = sf * acc[j];
                    float mj = f[j] * (w[j] + d);
                    m[j] = mj;
                    back[j] = mj / f[j] - d;
                }
            }
            // The elements whose round trip misses their bits (w is finite, never NaN, so the float comparison is a
            // bit comparison here). A non-finite m always misses (its round trip is infinite or NaN), so the
            // finiteness check lives here too.
            int linear = i * cols + t * ExactMerge.TILE;
            for (int q = 0, count = ExactMerge.misses(back, w, len, pos); q < count; q++) {
                int j = pos[q];
                if (!Float.isFinite(m[j])) {
                    record.truncate(mark);
                    return new ExactMerge.Failure(i, t * ExactMerge.TILE + j, w[j], sf * acc[j]);
                }
                record.add(linear + j, Float.floatToRawIntBits(w[j]));
            }
        }
        for (int t = 0; t < buffers.row.length; t++) {
            write(i, t, buffers.merged[t]);
        }
        return null;
    }

    @Override
    int unmergeRow(int i, MergeRecord record, int cursor, ExactMerge.Rows rows) {
        Buffers buffers = (Buffers) rows;
        float[] acc = buffers.acc;
        int c = i * rank;
        for (int t = 0; t < buffers.row.length; t++) {
            float[] w = buffers.row[t];
            int len = w.length;
            read(i, t, w);
            delta(c, v[t], acc, len);
            float sf = s;
            if (rowFactor == null && colFactor == null) {
                for (int j = 0; j < len; j++) {
                    w[j] = w[j] - sf * acc[j];
                }
            } else if (rowFactor != null) {
                float f = rowFactor[i];
                for (int j = 0; j < len; j++) {
                    w[j] = w[j] / f - sf * acc[j];
                }
            } else {
                float[] f = colFactor[t];
                for (int j = 0; j < len; j++) {
                    w[j] = w[j] / f[j] - sf * acc[j];
                }
            }
            int start = i * cols + t * ExactMerge.TILE;
            while (cursor < record.size() && record.index(cursor) < start + len) {
                w[record.index(cursor) - start] = Float.intBitsToFloat((int) record.bits(cursor));
                cursor++;
            }
            write(i, t, w);
        }
        return cursor;
    }
}
