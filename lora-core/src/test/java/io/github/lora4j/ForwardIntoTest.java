package io.github.lora4j;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

class ForwardIntoTest {

    private final LoraLinear layer = TestData.trainedLayer(DataType.FLOAT, 5, 24, 16, LoraConfig.builder().rank(4).build(), true);
    private final INDArray x = gaussian(DataType.FLOAT, 6, 1.0, 7, 24);

    @Test
    void writesExactlyWhatForwardReturnsUnmergedMergedAndDisabled() {
        INDArray out = Nd4j.zeros(DataType.FLOAT, 7, 16);
        assertSame(out, layer.forwardInto(x, out));
        assertBitwiseEquals(layer.forward(x), out, "unmerged");
        layer.merge();
        assertBitwiseEquals(layer.forward(x), layer.forwardInto(x, out), "merged");
        layer.unmerge();
        layer.disableAdapters();
        assertBitwiseEquals(layer.forward(x), layer.forwardInto(x, out), "disabled");
    }

    @Test
    void refusesTrainingModeAndBadOutputsAndLeavesTheOutputAlone() {
        INDArray out = Nd4j.ones(DataType.FLOAT, 7, 16);
        INDArray before = out.dup();
        layer.train();
        assertTrue(assertThrows(IllegalStateException.class, () -> layer.forwardInto(x, out)).getMessage()
                .contains("eval()"));
        layer.eval();
        assertTrue(assertThrows(IllegalArgumentException.class, () -> layer.forwardInto(x, Nd4j.ones(DataType.FLOAT, 7, 15)))
                .getMessage().contains("shape [7, 16], got FLOAT [7, 15]"));
        assertTrue(assertThrows(IllegalArgumentException.class, () -> layer.forwardInto(x, Nd4j.ones(DataType.DOUBLE, 7, 16)))
                .getMessage().contains("FLOAT array of shape [7, 16], got DOUBLE"));
        assertTrue(assertThrows(IllegalArgumentException.class, () -> layer.forwardInto(x, Nd4j.ones(DataType.FLOAT, 7, 16).dup('f')))
                .getMessage().contains("in order 'f'"));
        assertTrue(assertThrows(IllegalArgumentException.class, () -> layer.forwardInto(x.reshape(7, 1, 24), out))
                .getMessage().contains("expected [n, 24]"));
        assertBitwiseEquals(before, out, "output after refused calls");
    }
}
