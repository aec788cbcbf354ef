package io.github.lora4j;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.util.List;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * {@link LoraEmbedding#addAdapter} is all-or-nothing: when drawing or installing PEFT's {@code B} fails part way,
 * the layer is as it was (no half-initialised adapter left behind, a pending training forward still usable), and the
 * same name can be added afterwards. The failure is injected through the package-private draw seam.
 */
class LoraEmbeddingAddAdapterTest {

    /** The ways the draw of {@code B} can go wrong after the checks of name, rank and scaling have passed. */
    enum Failure {
        /** The draw itself throws (e.g. an index overflow). */
        THROWS,
        /** The draw runs out of memory: an Error, not an exception. */
        OUT_OF_MEMORY,
        /** The draw yields a non-finite B, refused by the late weight check. */
        NOT_FINITE,
        /** The draw yields a B of the wrong shape, refused by the late weight check. */
        WRONG_SHAPE
    }

    private static LoraEmbedding.NormalDraw failing(Failure failure) {
        return (type, seed, rows, cols) -> switch (failure) {
            case THROWS -> throw new ArithmeticException("injected: integer overflow");
            case OUT_OF_MEMORY -> throw new OutOfMemoryError("injected");
            case NOT_FINITE -> Nd4j.valueArrayOf(new long[] {rows, cols}, Double.NaN, type);
            case WRONG_SHAPE -> Nd4j.zeros(type, rows + 1, cols);
        };
    }

    @Property(tries = 24)
    void aFailedAddLeavesTheLayerAsItWas(@ForAll Failure failure, @ForAll @IntRange(min = 2, max = 12) int vocab,
                                         @ForAll @IntRange(min = 2, max = 7) int dim, @ForAll long seed) {
        DataType type = Math.floorMod(seed, 2) == 0 ? DataType.FLOAT : DataType.DOUBLE;
        INDArray table = gaussian(type, seed, 1, vocab, dim);
        LoraEmbedding e = LoraEmbedding.wrap(table, LoraConfig.builder().rank(1).build());
        e.setAdapterWeights("default", gaussian(type, seed + 1, 0.5, 1, vocab), gaussian(type, seed + 2, 0.5, dim, 1));
        INDArray tableBefore = table.dup();
        long[] ids = {0, vocab - 1, 0};
        INDArray y = e.forward(ids);
        long total = e.totalParameterCount();
        e.train();
        e.forward(ids);                                             // pending: backward must still work afterwards
        int r = 1 + Math.floorMod(seed, Math.min(vocab, dim));
        LoraConfig cfg = LoraConfig.builder().rank(r).seed(seed).build();

        Throwable thrown = assertThrows(Throwable.class, () -> e.addAdapter("extra", cfg, failing(failure)));

        assertEquals(failure == Failure.OUT_OF_MEMORY ? OutOfMemoryError.class
                : failure == Failure.THROWS ? ArithmeticException.class : IllegalArgumentException.class,
                thrown.getClass(), "the failure reaches the caller unchanged: " + thrown);
        assertEquals(List.of("default"), e.adapterNames(), "no half-made adapter is left");
        assertEquals("default", e.activeAdapter());
        assertEquals(total, e.totalParameterCount(), "parameter count");
        assertThrows(IllegalArgumentException.class, () -> e.adapter("extra"), "adapter('extra') is unknown");
        e.backward(Nd4j.ones(type, ids.length, dim));               // the training forward survived the failure
        e.eval();
        assertBitwiseEquals(tableBefore, table, "the table");
        assertBitwiseEquals(y, e.forward(ids), "the output");

        e.addAdapter("extra", cfg);                                 // the name is free again, and the draw is PEFT's
        LoraEmbedding fresh = LoraEmbedding.base(tableBefore.dup());
        fresh.addAdapter("extra", cfg);
        assertBitwiseEquals(fresh.adapter("extra").b(), e.adapter("extra").b(), "B after a retry");
        assertSame(cfg, e.adapter("extra").config());
    }
}
