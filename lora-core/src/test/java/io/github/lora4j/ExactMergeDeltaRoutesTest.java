package io.github.lora4j;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import net.jqwik.api.lifecycle.AfterProperty;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * The exact merge computes Δ in Java, with {@link Math#fma} where the JVM has it as an instruction and with a
 * multiply and an add otherwise. Both ways must restore W bitwise, and an unmerge must take the way its merge took
 * even when the switch changed in between (the two ways round differently, so mixing them would miss bits).
 */
class ExactMergeDeltaRoutesTest {

    /** A layer over W {@code [rows, cols]} in its layout, with alpha = 3r and a large random adapter. */
    private static LoraLinear layer(boolean doublePrecision, boolean inOut, int rows, int cols, int rank, long seed) {
        TestData.MergeCase c = TestData.MergeCase.of(doublePrecision ? DataType.DOUBLE : DataType.FLOAT, inOut, rows,
                cols, rank, seed, 1.0, 0.7);
        LoraLinear l = LoraLinear.wrap(c.w(), null, LoraConfig.builder().rank(c.r()).alpha(3 * c.r()).build(),
                inOut ? WeightLayout.IN_OUT : WeightLayout.OUT_IN);
        l.setAdapterWeights("default", c.a(), c.b());
        return l;
    }

    @AfterProperty
    void restoreRoute() {
        ExactMerge.forceMulAdd(false);
    }

    @Property(tries = 30)
    void eitherDeltaRouteRestoresWBitwiseAndTheUnmergeFollowsItsMerge(
            @ForAll boolean doublePrecision, @ForAll boolean inOut, @ForAll boolean mulAddAtMerge,
            @ForAll @IntRange(min = 1, max = 2100) int cols, @ForAll @IntRange(min = 1, max = 40) int rows,
            @ForAll @IntRange(min = 1, max = 13) int rank, @ForAll long seed) {
        // A large update (|sΔ| near |W|) leaves many elements whose round trip misses, so the record matters.
        LoraLinear l = layer(doublePrecision, inOut, rows, cols, rank, seed);
        INDArray w = l.weight();
        INDArray original = w.dup();
        ExactMerge.forceMulAdd(mulAddAtMerge);
        l.merge(MergeMode.EXACT);
        assertTrue(l.exactMergeBytes() > 0 || rows * cols < 50, "a large update records inexact elements");
        ExactMerge.forceMulAdd(!mulAddAtMerge);
        l.unmerge();
        assertBitwiseEquals(original, w, "W after an exact cycle whose Δ route switched between merge and unmerge");
    }

    /**
     * {@code mergedWeight()} is the array {@code merge()} would leave in W, bit for bit, in both layouts and types:
     * it once used a gemm, whose rounding differs from the merge's Java Δ by an ulp here and there.
     */
    @Property(tries = 30)
    void theMergedWeightCopyIsBitwiseWhatTheMergeWrites(
            @ForAll boolean doublePrecision, @ForAll boolean inOut,
            @ForAll @IntRange(min = 1, max = 300) int cols, @ForAll @IntRange(min = 1, max = 40) int rows,
            @ForAll @IntRange(min = 1, max = 13) int rank, @ForAll long seed) {
        LoraLinear l = layer(doublePrecision, inOut, rows, cols, rank, seed);
        INDArray w = l.weight();
        INDArray original = w.dup();
        INDArray copy = l.mergedWeight();
        assertBitwiseEquals(original, w, "mergedWeight() leaves W alone");
        l.merge(MergeMode.EXACT);
        assertBitwiseEquals(copy, w, "mergedWeight() against the W that merge() wrote");
    }
}
