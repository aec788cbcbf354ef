package io.github.lora4j;

import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.Executable;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/** Every refused call names what was expected and what came, and leaves the layer exactly as it was. */
class LoraLinearValidationTest {

    private static final int IN = 6;
    private static final int OUT = 4;
    private LoraLinear layer;

    @BeforeEach
    void setUp() {
        layer = TestData.trainedLayer(DataType.FLOAT, 11, IN, OUT, LoraConfig.builder().rank(2).build(), true);
        layer.addAdapter("other", LoraConfig.builder().rank(3).seed(5).build());
    }

    /** Everything observable about a layer, bit for bit. */
    private static List<Object> snapshot(LoraLinear l) {
        List<Object> s = new ArrayList<>();
        s.add(TestData.bits(l.weight()));
        s.add(l.bias() == null ? null : TestData.bits(l.bias()));
        s.add(l.adapterNames());
        s.add(String.valueOf(l.activeAdapter()));
        s.add(l.isMerged());
        s.add(l.mergeMode());
        s.add(l.adaptersEnabled());
        s.add(l.isTraining());
        for (String name : l.adapterNames()) {
            LoraAdapter a = l.adapter(name);
            s.add(TestData.bits(a.a()));
            s.add(TestData.bits(a.b()));
            s.add(TestData.bits(a.gradA()));
            s.add(TestData.bits(a.gradB()));
        }
        return s;
    }

    private static void assertSnapshotEquals(List<Object> expected, List<Object> actual) {
        assertEquals(expected.size(), actual.size());
        for (int i = 0; i < expected.size(); i++) {
            Object e = expected.get(i);
            Object a = actual.get(i);
            if (e instanceof long[]) {
                assertArrayEquals((long[]) e, (long[]) a, "state item " + i + " changed");
            } else {
                assertEquals(e, a, "state item " + i + " changed");
            }
        }
    }

    /** Runs a call that must fail with {@code type}, with a message containing every fragment, leaving the layer unchanged. */
    private <T extends Throwable> void assertRefused(Class<T> type, Executable call, String... fragments) {
        List<Object> before = snapshot(layer);
        T ex = assertThrows(type, call);
        for (String f : fragments) {
            assertTrue(ex.getMessage().contains(f), "message '" + ex.getMessage() + "' should contain '" + f + "'");
        }
        assertSnapshotEquals(before, snapshot(layer));
    }

    @Test
    void wrongInputWidth() {
        assertRefused(IllegalArgumentException.class, () -> layer.forward(Nd4j.zeros(DataType.FLOAT, 3, IN + 1)),
                "expected [..., 6]", "got [3, 7]");
    }

    @Test
    void wrongInputDataType() {
        assertRefused(IllegalArgumentException.class, () -> layer.forward(Nd4j.zeros(DataType.DOUBLE, 3, IN)),
                "expected FLOAT", "got DOUBLE");
        assertRefused(IllegalArgumentException.class, () -> layer.forward(Nd4j.zeros(DataType.INT32, 3, IN)),
                "expected FLOAT", "got INT");
    }

    @Test
    void nullInputs() {
        assertRefused(NullPointerException.class, () -> layer.forward(null), "input");
        assertRefused(NullPointerException.class, () -> layer.backward(null), "gradOutput");
    }

    @Test
    void wrongGradOutputShapeAndType() {
        layer.train();
        layer.forward(gaussian(DataType.FLOAT, 1, 1, 3, IN));
        assertRefused(IllegalArgumentException.class, () -> layer.backward(Nd4j.zeros(DataType.FLOAT, 3, OUT + 1)),
                "expected [3, 4]", "got [3, 5]");
        assertRefused(IllegalArgumentException.class, () -> layer.backward(Nd4j.zeros(DataType.FLOAT, 2, OUT)),
                "expected [3, 4]", "got [2, 4]");
        assertRefused(IllegalArgumentException.class, () -> layer.backward(Nd4j.zeros(DataType.DOUBLE, 3, OUT)),
                "expected FLOAT", "got DOUBLE");
        // the forward cache survived the refusals: a correct backward still works, once
        layer.backward(Nd4j.ones(DataType.FLOAT, 3, OUT));
        assertRefused(IllegalStateException.class, () -> layer.backward(Nd4j.ones(DataType.FLOAT, 3, OUT)),
                "needs a forward in training mode");
    }

    @Test
    void backwardWithoutTrainingForward() {
        layer.forward(gaussian(DataType.FLOAT, 1, 1, 3, IN)); // eval mode caches nothing
        assertRefused(IllegalStateException.class, () -> layer.backward(Nd4j.ones(DataType.FLOAT, 3, OUT)),
                "needs a forward in training mode");
    }

    @Test
    void invalidWeights() {
        assertThrows(NullPointerException.class, () -> LoraLinear.wrap(null, null, LoraConfig.defaults()));
        assertMessage(() -> LoraLinear.wrap(Nd4j.zeros(DataType.FLOAT, 4), null, LoraConfig.builder().rank(1).build()),
                "expected a non-empty matrix [out, in]", "got shape [4]");
        assertMessage(() -> LoraLinear.wrap(Nd4j.zeros(DataType.INT32, 4, 4), null, LoraConfig.builder().rank(1).build()),
                "expected data type FLOAT or DOUBLE", "got INT");
        INDArray nan = Nd4j.zeros(DataType.FLOAT, 4, 4);
        nan.putScalar(2, 3, Float.NaN);
        assertMessage(() -> LoraLinear.wrap(nan, null, LoraConfig.builder().rank(1).build()), "weight", "NaN");
        INDArray inf = Nd4j.zeros(DataType.DOUBLE, 4, 4);
        inf.putScalar(0, 1, Double.NEGATIVE_INFINITY);
        assertMessage(() -> LoraLinear.wrap(inf, null, LoraConfig.builder().rank(1).build()), "weight", "infinity");
    }

    @Test
    void invalidBias() {
        INDArray w = Nd4j.zeros(DataType.FLOAT, OUT, IN);
        LoraConfig c = LoraConfig.builder().rank(1).build();
        assertMessage(() -> LoraLinear.wrap(w, Nd4j.zeros(DataType.FLOAT, OUT + 1), c), "bias", "expected shape [4]", "got [5]");
        assertMessage(() -> LoraLinear.wrap(w, Nd4j.zeros(DataType.FLOAT, 2, 2), c), "bias", "expected shape [4]", "got [2, 2]");
        assertMessage(() -> LoraLinear.wrap(w, Nd4j.zeros(DataType.DOUBLE, OUT), c), "bias", "expected data type FLOAT", "got DOUBLE");
        assertEquals(OUT, LoraLinear.wrap(w, Nd4j.zeros(DataType.FLOAT, 1, OUT), c).bias().length());
    }

    @Test
    void ranksAboveMinInOutAreAcceptedAsInPeft() {
        // min(in, out) = 4 here; PEFT accepts more (wasteful but legal), and so does lora4j
        assertEquals(5, LoraLinear.wrap(Nd4j.zeros(DataType.FLOAT, OUT, IN), null, LoraConfig.builder().rank(5).build())
                .adapter("default").rank());
        layer.addAdapter("big", LoraConfig.builder().rank(OUT + 1).build());
        assertEquals(OUT + 1, layer.adapter("big").rank());
        assertMessage(() -> LoraConfig.builder().rank(0), "rank must be >= 1", "got 0");
    }

    @Test
    void adapterNames() {
        assertRefused(IllegalArgumentException.class, () -> layer.setActiveAdapter("nope"), "unknown adapter 'nope'", "[default, other]");
        assertRefused(IllegalArgumentException.class, () -> layer.deleteAdapter("nope"), "unknown adapter 'nope'");
        assertRefused(IllegalArgumentException.class, () -> layer.adapter("nope"), "unknown adapter 'nope'");
        assertRefused(IllegalArgumentException.class, () -> layer.addAdapter("other", LoraConfig.builder().rank(1).build()), "already exists");
        assertRefused(IllegalArgumentException.class, () -> layer.addAdapter(" ", LoraConfig.builder().rank(1).build()), "must not be blank");
        assertRefused(NullPointerException.class, () -> layer.addAdapter(null, LoraConfig.defaults()), "name");
    }

    @Test
    void setAdapterWeightsChecksShapeTypeAndValues() {
        INDArray goodA = Nd4j.ones(DataType.FLOAT, 3, IN);
        INDArray goodB = Nd4j.ones(DataType.FLOAT, OUT, 3);
        assertRefused(IllegalArgumentException.class, () -> layer.setAdapterWeights("other", Nd4j.ones(DataType.FLOAT, 2, IN), goodB),
                "A of adapter 'other'", "expected shape [3, 6]", "got [2, 6]");
        assertRefused(IllegalArgumentException.class, () -> layer.setAdapterWeights("other", goodA, Nd4j.ones(DataType.FLOAT, 3, OUT)),
                "B of adapter 'other'", "expected shape [4, 3]", "got [3, 4]");
        assertRefused(IllegalArgumentException.class, () -> layer.setAdapterWeights("other", goodA.castTo(DataType.DOUBLE), goodB),
                "expected data type FLOAT", "got DOUBLE");
        INDArray nanB = goodB.dup();
        nanB.putScalar(1, 1, Float.NaN);
        assertRefused(IllegalArgumentException.class, () -> layer.setAdapterWeights("other", goodA, nanB), "B of adapter 'other'", "NaN");
        // nothing was half-written: A is still the initial draw, not the ones
        assertTrue(layer.loraA("other").getFloat(0, 0) != 1.0f);
    }

    @Test
    void mergeStateMachine() {
        assertRefused(IllegalStateException.class, layer::unmerge, "nothing to unmerge");
        layer.merge();
        assertRefused(IllegalStateException.class, layer::merge, "already merged");
        assertRefused(IllegalStateException.class, () -> layer.merge(MergeMode.FAST), "already merged");
        assertRefused(IllegalStateException.class, () -> layer.deleteAdapter("default"), "merged into W");
        assertRefused(IllegalStateException.class, () -> layer.setActiveAdapter("other"), "'default' is merged");
        assertRefused(IllegalStateException.class, layer::disableAdapters, "merged into W");
        assertRefused(IllegalStateException.class, () -> layer.setAdapterWeights("default",
                Nd4j.ones(DataType.FLOAT, 2, IN), Nd4j.ones(DataType.FLOAT, OUT, 2)), "merged into W");
        assertRefused(IllegalStateException.class, () -> layer.updateTrainable(a -> a.a().addi(1)), "merged into W");
        layer.train();
        layer.forward(gaussian(DataType.FLOAT, 1, 1, 3, IN));
        assertRefused(IllegalStateException.class, () -> layer.backward(Nd4j.ones(DataType.FLOAT, 3, OUT)), "merged into W");
        // adapters that are not merged stay editable
        layer.setAdapterWeights("other", Nd4j.ones(DataType.FLOAT, 3, IN), Nd4j.ones(DataType.FLOAT, OUT, 3));
    }

    @Test
    void mergeWithNoActiveOrDisabledAdapters() {
        layer.disableAdapters();
        assertRefused(IllegalStateException.class, layer::merge, "adapters are disabled");
        layer.enableAdapters();
        layer.deleteAdapter("default");
        assertEquals(null, layer.activeAdapter());
        assertRefused(IllegalStateException.class, layer::merge, "no active adapter");
    }

    @Test
    void mergeThatWouldOverflowIsRolledBackExactly() {
        INDArray w = gaussian(DataType.FLOAT, 3, 1.0, 40, 30);
        w.putScalar(37, 2, 3.0e38f); // late row: the merge fails after writing earlier rows, which must be undone
        LoraLinear l = LoraLinear.wrap(w, null, LoraConfig.builder().rank(2).alpha(2).build());
        l.setAdapterWeights("default", Nd4j.ones(DataType.FLOAT, 2, 30).muli(1.0e19f), Nd4j.ones(DataType.FLOAT, 40, 2).muli(1.0e19f));
        long[] before = TestData.bits(w);
        for (MergeMode mode : MergeMode.values()) {
            IllegalStateException ex = assertThrows(IllegalStateException.class, () -> l.merge(mode));
            assertTrue(ex.getMessage().contains("W[37, 2] non-finite"), ex.getMessage());
            assertTrue(ex.getMessage().contains("W left unchanged"), ex.getMessage());
            assertArrayEquals(before, TestData.bits(w), "W after a refused " + mode + " merge");
            assertEquals(false, l.isMerged());
        }
    }

    @org.junit.jupiter.params.ParameterizedTest
    @org.junit.jupiter.params.provider.ValueSource(floats = {Float.NaN, Float.POSITIVE_INFINITY, Float.NEGATIVE_INFINITY})
    void mergeOfADivergedAdapterIsRefusedInEveryMode(float bad) {
        layer.updateTrainable(a -> a.a().putScalar(a.rank() - 1, 5, bad));
        List<Object> before = snapshot(layer);
        for (MergeMode mode : MergeMode.values()) {
            IllegalStateException ex = assertThrows(IllegalStateException.class, () -> layer.merge(mode));
            assertTrue(ex.getMessage().contains("NaN or infinity"), ex.getMessage());
            assertSnapshotEquals(before, snapshot(layer));
        }
    }

    private static void assertMessage(Executable call, String... fragments) {
        IllegalArgumentException ex = assertThrows(IllegalArgumentException.class, call);
        for (String f : fragments) {
            assertTrue(ex.getMessage().contains(f), "message '" + ex.getMessage() + "' should contain '" + f + "'");
        }
    }
}
