package io.github.lora4j;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNotSame;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertTrue;

import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * W narrower than a tile is merged by hidden copies of the pass classes, one per width class, so that the JIT
 * compiles their loops for their own widths ({@link NarrowPasses}). The copies must be what is used, and must
 * compute exactly what the regular classes compute.
 */
class ExactMergeNarrowCopiesTest {

    private static ExactMerge.Pass regular(INDArray w, boolean inOut, INDArray a, INDArray b, double s, boolean fma) {
        return w.dataType() == DataType.DOUBLE ? new ExactDoublePass(w, inOut, a, b, s, fma)
                : new ExactFloatPass(w, inOut, a, b, s, fma);
    }

    private static ExactMerge.Pass copy(int widthClass, INDArray w, boolean inOut, INDArray a, INDArray b, double s,
                                        boolean fma) throws Throwable {
        NarrowPasses.Copy c = NarrowPasses.copy(widthClass, w.dataType() == DataType.DOUBLE);
        assertNotNull(c, "the copies can be defined on this JVM");
        return (ExactMerge.Pass) c.constructor().invokeExact(w, inOut, a, b, s, fma);
    }

    /** Any width class's copy, on any W, merges to the regular class's bits with the same record, and unmerges back. */
    @Property(tries = 40)
    void aCopyComputesTheRegularPassBitForBit(
            @ForAll boolean doublePrecision, @ForAll boolean inOut, @ForAll boolean fma,
            @ForAll @IntRange(min = 0, max = 2) int widthClass,
            @ForAll @IntRange(min = 1, max = 1100) int cols, @ForAll @IntRange(min = 1, max = 24) int rows,
            @ForAll @IntRange(min = 1, max = 13) int rank, @ForAll long seed) throws Throwable {
        // |sΔ| near |W|: many round trips miss, so the records have entries to compare.
        TestData.MergeCase c = TestData.MergeCase.of(doublePrecision ? DataType.DOUBLE : DataType.FLOAT, inOut, rows,
                cols, rank, seed, 1.0, 0.7);
        INDArray w = c.w();
        INDArray a = c.a();
        INDArray b = c.b();
        double s = 3.0 / c.r();
        INDArray original = w.dup();
        INDArray wCopy = w.dup();

        MergeRecord.Route route = fma ? MergeRecord.Route.JAVA_FMA : MergeRecord.Route.JAVA_MUL_ADD;
        MergeRecord expected = new MergeRecord(route);
        MergeRecord actual = new MergeRecord(route);
        ExactMerge.Pass reference = regular(w, inOut, a, b, s, fma);
        ExactMerge.Pass narrow = copy(widthClass, wCopy, inOut, a, b, s, fma);
        assertNotSame(reference.getClass(), narrow.getClass());
        assertNull(reference.merge(expected));
        assertNull(narrow.merge(actual));

        assertBitwiseEquals(w, wCopy, "W merged by the copy against the regular class");
        assertEquals(expected.size(), actual.size(), "recorded elements");
        for (int q = 0; q < expected.size(); q++) {
            assertEquals(expected.index(q), actual.index(q), "recorded index " + q);
            assertEquals(expected.bits(q), actual.bits(q), "recorded bits " + q);
        }
        narrow.unmerge(actual);
        assertBitwiseEquals(original, wCopy, "W after the copy's unmerge");
    }

    @Test
    void narrowWUsesItsWidthClassesHiddenCopyAndWholeTilesTheRegularClass() {
        int[][] expected = {{1, 0}, {64, 0}, {127, 0}, {128, 1}, {511, 1}, {512, 2}, {1023, 2}, {1024, -1},
                {2100, -1}};
        for (int[] e : expected) {
            assertEquals(e[1], NarrowPasses.widthClass(e[0]), "width class of " + e[0] + " columns");
        }
        for (DataType type : new DataType[] {DataType.FLOAT, DataType.DOUBLE}) {
            for (int[] e : expected) {
                int cols = e[0];
                INDArray w = gaussian(type, cols, 1.0, 3, cols);
                INDArray original = w.dup();
                MergeRecord record = ExactMerge.merge(w, false, gaussian(type, 5, 1.0, 2, cols),
                        gaussian(type, 6, 1.0, 3, 2), 0.5);
                Class<?> used = record.pass().getClass();
                if (e[1] < 0) {
                    assertSame(type == DataType.DOUBLE ? ExactDoublePass.class : ExactFloatPass.class, used,
                            cols + " columns");
                } else {
                    assertTrue(used.isHidden(), cols + " columns: " + used);
                    assertSame(NarrowPasses.copy(e[1], type == DataType.DOUBLE).type(), used, cols + " columns");
                }
                ExactMerge.unmerge(record);
                assertBitwiseEquals(original, w, type + ", " + cols + " columns: unmerge");
            }
        }
    }

    @Test
    void eachWidthClassAndTypeHasItsOwnCopy() {
        java.util.Set<Class<?>> seen = new java.util.HashSet<>();
        for (int c = 0; c < 3; c++) {
            for (boolean asDouble : new boolean[] {false, true}) {
                NarrowPasses.Copy copy = NarrowPasses.copy(c, asDouble);
                assertSame(copy, NarrowPasses.copy(c, asDouble), "defined once");
                assertTrue(seen.add(copy.type()), "a class of its own: " + copy.type());
                assertSame(asDouble ? ExactDoublePass.class.getSuperclass() : ExactFloatPass.class.getSuperclass(),
                        copy.type().getSuperclass());
            }
        }
        assertNull(NarrowPasses.copy(-1, false), "whole tiles have no copy");
    }
}
