package io.github.lora4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.HashSet;
import java.util.Set;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;

/**
 * {@link SharedMemory}, the one overlap rule: over views of one array (row and column blocks, row and column
 * interleaves, transposed blocks, single rows, flat intervals) it never says "disjoint" where the views share an
 * element, by a brute-force check of every element's address; it is exact for views without gaps.
 */
class SharedMemoryTest {

    private static final int KINDS = 8;

    @Property(tries = 500)
    void disjointByTheRuleMeansNoSharedElementAddress(@ForAll @IntRange(min = 1, max = 7) int rows,
            @ForAll @IntRange(min = 1, max = 7) int cols, @ForAll boolean dbl,
            @ForAll @IntRange(min = 0, max = KINDS - 1) int kindA, @ForAll @IntRange(min = 0, max = 20) int pA,
            @ForAll @IntRange(min = 0, max = 20) int qA, @ForAll @IntRange(min = 0, max = 20) int kA,
            @ForAll @IntRange(min = 0, max = KINDS - 1) int kindB, @ForAll @IntRange(min = 0, max = 20) int pB,
            @ForAll @IntRange(min = 0, max = 20) int qB, @ForAll @IntRange(min = 0, max = 20) int kB,
            @ForAll boolean sameBase) {
        DataType type = dbl ? DataType.DOUBLE : DataType.FLOAT;
        INDArray base = Nd4j.create(type, rows, cols);
        INDArray other = sameBase ? base : Nd4j.create(type, rows, cols);
        INDArray a = view(base, kindA, pA, qA, kA);
        INDArray b = view(other, kindB, pB, qB, kB);
        Set<Long> addressesA = elementAddresses(a);
        Set<Long> addressesB = elementAddresses(b);
        boolean shareElement = addressesA.stream().anyMatch(addressesB::contains);
        String what = describe(a) + " vs " + describe(b);
        // The brute force is itself checked against ND4J: writing through one view shows in the other iff shared.
        assertEquals(shareElement, sharedByWriting(base, other, a, b), "element addresses vs writes: " + what);
        boolean rule = SharedMemory.overlap(a, b);
        if (!rule) {
            assertFalse(shareElement, "the rule said disjoint, but an element is shared: " + what);
        }
        assertEquals(rule, SharedMemory.overlap(b, a), "symmetric: " + what);
        if (dense(a) && dense(b)) {
            assertEquals(shareElement, rule, "views without gaps: the rule is exact: " + what);
        }
    }

    @Test
    void rowBlocksAreDisjointAndInterleavesAreConservative() {
        INDArray w = Nd4j.create(DataType.FLOAT, 4, 4);
        assertFalse(SharedMemory.overlap(w.getRow(0), w.getRow(1)), "disjoint row blocks");
        assertTrue(SharedMemory.overlap(w.getColumn(0), w));
        INDArray even = w.get(NDArrayIndex.all(), NDArrayIndex.interval(0, 2, 4));
        INDArray odd = w.get(NDArrayIndex.all(), NDArrayIndex.interval(1, 2, 4));
        assertTrue(SharedMemory.overlap(even, odd), "interleaved columns share no element but count as overlapping");
        assertFalse(SharedMemory.overlap(w, null));
        assertNull(SharedMemory.span(Nd4j.create(DataType.FLOAT, 0, 4)), "an empty array occupies no memory");
        assertFalse(SharedMemory.overlap(Nd4j.create(DataType.FLOAT, 0, 4), w));
    }

    /** One of {@link #KINDS} kinds of view of {@code base} {@code [R, C]}, never empty, chosen by p, q, k. */
    static INDArray view(INDArray base, int kind, int p, int q, int k) {
        int rows = (int) base.size(0);
        int cols = (int) base.size(1);
        int r0 = p % rows;
        int r1 = r0 + 1 + q % (rows - r0);
        int c0 = q % cols;
        int c1 = c0 + 1 + k % (cols - c0);
        return switch (kind) {
            case 0 -> base;
            case 1 -> base.get(NDArrayIndex.interval(r0, r1), NDArrayIndex.all());                 // row block
            case 2 -> base.get(NDArrayIndex.all(), NDArrayIndex.interval(c0, c1));                 // column block
            case 3 -> base.get(NDArrayIndex.all(), NDArrayIndex.interval(c0, step(k, cols - c0), cols)); // interleave
            case 4 -> base.get(NDArrayIndex.interval(r0, r1), NDArrayIndex.interval(c0, c1)).transpose();
            case 5 -> base.getRow(r0);                                                             // one row [C]
            case 6 -> {                                                                            // flat interval
                int n = rows * cols;
                int s = (p * 7 + q) % n;
                yield base.reshape(n).get(NDArrayIndex.interval(s, s + 1 + k % (n - s)));
            }
            default -> base.get(NDArrayIndex.interval(r0, step(k, rows - r0), rows), NDArrayIndex.all()); // row interleave
        };
    }

    /** A stride of 1 to 3 that leaves two elements in {@code span} where it can (ND4J refuses a longer one). */
    private static int step(int k, int span) {
        return Math.max(1, Math.min(1 + k % 3, span - 1));
    }

    /** The address of every element of {@code a}, from its buffer, offset and strides: one per element. */
    private static Set<Long> elementAddresses(INDArray a) {
        Set<Long> out = new HashSet<>();
        long width = a.dataType().width();
        long base = a.data().address();
        long[] idx = new long[a.rank()];
        for (long n = 0; n < a.length(); n++) {
            long element = a.offset();
            for (int d = 0; d < a.rank(); d++) {
                element += idx[d] * a.stride(d);
            }
            out.add(base + element * width);
            for (int d = a.rank() - 1; d >= 0; d--) {
                if (++idx[d] < a.size(d)) {
                    break;
                }
                idx[d] = 0;
            }
        }
        return out;
    }

    /** Whether writing ones through {@code a} (all else zero) shows through {@code b}. */
    private static boolean sharedByWriting(INDArray baseA, INDArray baseB, INDArray a, INDArray b) {
        baseA.assign(0);
        baseB.assign(0);
        a.assign(1);
        return b.dup().sumNumber().doubleValue() != 0;
    }

    /** Whether {@code a}'s elements fill its byte range without gaps. */
    private static boolean dense(INDArray a) {
        SharedMemory.Span s = SharedMemory.span(a);
        return s.end() - s.start() == a.length() * a.dataType().width();
    }

    private static String describe(INDArray a) {
        return java.util.Arrays.toString(a.shape()) + " strides " + java.util.Arrays.toString(a.stride()) + " offset "
                + a.offset();
    }
}
