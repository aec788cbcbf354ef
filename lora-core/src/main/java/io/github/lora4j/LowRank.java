package io.github.lora4j;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;

/**
 * Truncated SVD of a matrix given as a thin product {@code Δ = B A} ({@code B [out, R]}, {@code A [R, in]}),
 * without forming the {@code [out, in]} matrix: {@code B = Qb Rb}, {@code Aᵀ = Qa Ra}, so
 * {@code Δ = Qb (Rb Raᵀ) Qaᵀ}; the SVD of the small {@code R × R} core gives Δ's singular triplets, and
 * Eckart–Young makes the truncation the best rank-{@code r} approximation in Frobenius and spectral norm.
 * Cost {@code O((in + out)·R²)}. All work is in double; ND4J's LAPACK wrappers need f-order inputs (a c-order
 * matrix gives wrong results silently) and overwrite them, hence the {@code dup('f')} copies.
 */
final class LowRank {

    private LowRank() {
    }

    /**
     * Returns {@code {B', A'}} with {@code B' [out, r]} and {@code A' [r, in]} such that {@code B' A'} is the best
     * rank-{@code r} approximation of {@code b·a}; singular values go into {@code B'} (as PEFT does), {@code A'} has
     * orthonormal rows. Results are DOUBLE.
     */
    static INDArray[] truncatedSvd(INDArray b, INDArray a, int r) {
        long out = b.rows();
        long in = a.columns();
        long big = b.columns();
        if (big > out || big > in) {
            // The factors are not thin: Δ itself is no bigger than they are, so decompose it directly.
            INDArray delta = b.castTo(DataType.DOUBLE).mmul(a.castTo(DataType.DOUBLE));
            return svdOf(delta, null, null, r);
        }
        INDArray qb = b.castTo(DataType.DOUBLE).dup('f');
        INDArray rb = Nd4j.create(DataType.DOUBLE, new long[] {big, big}, 'f');
        Nd4j.getBlasWrapper().lapack().geqrf(qb, rb);
        INDArray qa = a.castTo(DataType.DOUBLE).transpose().dup('f');
        INDArray ra = Nd4j.create(DataType.DOUBLE, new long[] {big, big}, 'f');
        Nd4j.getBlasWrapper().lapack().geqrf(qa, ra);
        INDArray core = rb.mmul(ra.transpose());
        return svdOf(core, qb, qa, r);
    }

    /** SVD of {@code m}; with {@code left}/{@code right} given, of {@code left · m · rightᵀ}. */
    private static INDArray[] svdOf(INDArray m, INDArray left, INDArray right, int r) {
        long rows = m.rows();
        long cols = m.columns();
        long k = Math.min(rows, cols);
        INDArray work = m.dup('f');
        INDArray s = Nd4j.create(DataType.DOUBLE, k);
        INDArray u = Nd4j.create(DataType.DOUBLE, new long[] {rows, rows}, 'f');
        INDArray vt = Nd4j.create(DataType.DOUBLE, new long[] {cols, cols}, 'f');
        Nd4j.getBlasWrapper().lapack().gesvd(work, s, u, vt);
        int keep = (int) Math.min(r, k);
        INDArray uk = u.get(NDArrayIndex.all(), NDArrayIndex.interval(0, keep)).mulRowVector(
                s.get(NDArrayIndex.interval(0, keep)).reshape(1, keep));
        INDArray vk = vt.get(NDArrayIndex.interval(0, keep), NDArrayIndex.all());
        INDArray newB = left == null ? uk : left.mmul(uk);
        INDArray newA = right == null ? vk : vk.mmul(right.transpose());
        if (keep < r) {
            // Δ has fewer than r singular directions: pad with zero rank components.
            newB = Nd4j.concat(1, newB, Nd4j.zeros(DataType.DOUBLE, newB.rows(), r - keep));
            newA = Nd4j.concat(0, newA, Nd4j.zeros(DataType.DOUBLE, r - keep, newA.columns()));
        }
        return new INDArray[] {newB.dup('c'), newA.dup('c')};
    }
}
