package io.github.lora4j;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertTrue;

import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

class ExactMergeTest {

    /**
     * A trained adapter's update is small next to W (here |sΔ| ≈ 1 % of |W|): then almost every element round-trips
     * by itself and the record stays far below a copy of W, which is the point of exact unmerge without a backup.
     */
    @Test
    void aThousandCyclesInFloat32RestoreWBitwiseWithoutACopyOfW() {
        int in = 96;
        int out = 80;
        INDArray w = gaussian(DataType.FLOAT, 1000, 0.5, out, in);
        LoraLinear l = LoraLinear.wrap(w, gaussian(DataType.FLOAT, 1001, 0.5, out), LoraConfig.builder().rank(8).alpha(16).build());
        l.setAdapterWeights("default", gaussian(DataType.FLOAT, 1002, 0.05, 8, in), gaussian(DataType.FLOAT, 1003, 0.02, out, 8));
        INDArray original = w.dup();
        long wBytes = 4L * in * out;
        long maxRecord = 0;
        for (int i = 0; i < 1000; i++) {
            l.merge();
            maxRecord = Math.max(maxRecord, l.exactMergeBytes());
            l.unmerge();
        }
        assertBitwiseEquals(original, w, "W after 1,000 exact merge/unmerge cycles");
        // The record of inexact elements stays well below W; the merge also keeps its copy of A and B (r·(in + out)).
        long factors = 4L * 8 * (in + out);
        assertTrue(maxRecord <= wBytes / 4 + factors,
                "bookkeeping " + maxRecord + " B must stay well below W's " + wBytes + " B plus the factors' " + factors);
    }

    /** The worst case (update as large as W) still restores W; the record then holds most elements. */
    @Test
    void aHundredCyclesWithAnUpdateAsLargeAsWRestoreWBitwise() {
        LoraLinear l = TestData.trainedLayer(DataType.FLOAT, 1000, 96, 80, LoraConfig.builder().rank(8).alpha(16).build(), true);
        INDArray original = l.weight().dup();
        for (int i = 0; i < 100; i++) {
            l.merge();
            assertTrue(l.exactMergeBytes() <= 12L * 96 * 80 + 4L * 8 * (96 + 80),
                    "at most 12 B per element of W (the record is trimmed) and the copy of A and B");
            l.unmerge();
        }
        assertBitwiseEquals(original, l.weight(), "W after 100 exact cycles with a large update");
    }

    @Test
    void cyclesMixingActiveAdaptersRestoreWBitwise() {
        LoraLinear l = TestData.trainedLayer(DataType.FLOAT, 7, 33, 65, LoraConfig.builder().rank(4).build(), false);
        l.addAdapter("other", LoraConfig.builder().rank(8).alpha(32).init(LoraInit.GAUSSIAN).build());
        l.setAdapterWeights("other", gaussian(DataType.FLOAT, 8, 2, 8, 33), gaussian(DataType.FLOAT, 9, 2, 65, 8));
        INDArray original = l.weight().dup();
        for (int i = 0; i < 200; i++) {
            l.setActiveAdapter(i % 3 == 0 ? "other" : "default");
            l.merge(i % 5 == 0 ? MergeMode.FAST : MergeMode.EXACT);
            l.unmerge();
            if (i % 5 == 0) {
                // a fast cycle may move W by an ulp; exactness is promised for exact cycles from there on
                original = l.weight().dup();
            }
        }
        assertBitwiseEquals(original, l.weight(), "W after mixed cycles");
    }

    /**
     * A W of several blocks, each split over threads: a merge that fails late (third block, two chunks failing)
     * names the first failing element in row-major order and restores every row already written, including
     * rows written by the other thread after the failing one, from the record (every element is inexact here).
     */
    @Test
    void aLateFailureInAMultiBlockParallelMergeIsRolledBackBitwise() {
        int in = 700;
        int out = 900; // blocks of 374 rows
        INDArray w = gaussian(DataType.FLOAT, 11, 1.0, out, in);
        w.putScalar(880, 5, 3.0e38f);
        w.putScalar(760, 9, 3.0e38f);
        LoraLinear l = LoraLinear.wrap(w, null, LoraConfig.builder().rank(2).alpha(2).build());
        l.setAdapterWeights("default", org.nd4j.linalg.factory.Nd4j.ones(DataType.FLOAT, 2, in).muli(1.0e19f),
                org.nd4j.linalg.factory.Nd4j.ones(DataType.FLOAT, out, 2).muli(1.0e19f));
        INDArray original = w.dup();
        IllegalStateException ex = org.junit.jupiter.api.Assertions.assertThrows(IllegalStateException.class, l::merge);
        assertTrue(ex.getMessage().contains("W[760, 9] non-finite"), ex.getMessage());
        assertBitwiseEquals(original, w, "W after a refused multi-block merge");
        org.junit.jupiter.api.Assertions.assertFalse(l.isMerged());
    }

    /** The same large W without the poisoned elements: merge, unmerge, bitwise, with most elements recorded. */
    @Test
    void aMultiBlockParallelMergeWithEveryElementRecordedRoundTrips() {
        int in = 700;
        int out = 900;
        INDArray w = gaussian(DataType.FLOAT, 12, 1.0, out, in);
        LoraLinear l = LoraLinear.wrap(w, null, LoraConfig.builder().rank(2).alpha(2).build());
        l.setAdapterWeights("default", gaussian(DataType.FLOAT, 13, 3.0, 2, in), gaussian(DataType.FLOAT, 14, 3.0, out, 2));
        INDArray original = w.dup();
        l.merge();
        assertTrue(l.exactMergeBytes() > 12L * in * out / 10, "a large update leaves many inexact elements: " + l.exactMergeBytes());
        l.unmerge();
        assertBitwiseEquals(original, w, "W after a multi-block exact cycle");
    }

    /** Exactness must not depend on the relative size of W and the update (tiny W + huge Δ is the hard case). */
    @Property(tries = 40)
    void exactRoundTripAtAnyScaleRatio(@ForAll @IntRange(min = -12, max = 12) int log2Ratio,
                                       @ForAll @IntRange(min = 1, max = 70) int in, @ForAll @IntRange(min = 1, max = 70) int out,
                                       @ForAll boolean doublePrecision, @ForAll long seed) {
        DataType type = doublePrecision ? DataType.DOUBLE : DataType.FLOAT;
        int r = Math.min(3, Math.min(in, out));
        INDArray w = gaussian(type, seed, 1.0, out, in);
        LoraLinear l = LoraLinear.wrap(w, null, LoraConfig.builder().rank(r).build());
        double scale = Math.pow(2, log2Ratio);
        l.setAdapterWeights("default", gaussian(type, seed + 1, scale, r, in), gaussian(type, seed + 2, 1.0, out, r));
        INDArray original = w.dup();
        l.merge();
        l.unmerge();
        assertBitwiseEquals(original, w, "W after exact cycle at scale 2^" + log2Ratio);
    }

    /**
     * The unmerge computes Δ from the merge's own copy of the factors and scale: W comes back bitwise even when A and B
     * are not what they were at the merge (the layer refuses such changes while merged; this is the pass's own
     * guarantee, one level down).
     */
    @Property(tries = 30)
    void theUnmergeUsesTheMergesFactorsNotTheirCurrentValues(@ForAll boolean doublePrecision, @ForAll boolean inOut,
                                                             @ForAll @IntRange(min = 1, max = 1500) int cols,
                                                             @ForAll @IntRange(min = 1, max = 30) int rows,
                                                             @ForAll @IntRange(min = 1, max = 9) int rank,
                                                             @ForAll long seed) {
        TestData.MergeCase c = TestData.MergeCase.of(doublePrecision ? DataType.DOUBLE : DataType.FLOAT, inOut, rows,
                cols, rank, seed, 0.5, 0.5);
        INDArray w = c.w();
        INDArray a = c.a();
        INDArray b = c.b();
        INDArray original = w.dup();
        MergeRecord record = ExactMerge.merge(w, inOut, a, b, 1.5);
        a.addi(0.25);
        b.muli(-2);
        ExactMerge.unmerge(record);
        assertBitwiseEquals(original, w, "W after an exact cycle whose A and B changed in between");
    }
}
