package io.github.lora4j.dl4j;

import static io.github.lora4j.dl4j.Bits.assertBitwise;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.LoraConfig;
import java.util.List;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.Size;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.learning.config.Adam;

/**
 * Model-based: random sequences of fit / merge / unmerge on a LoRA network against a model that knows only whether
 * the network is merged. Whenever it is not, every {@code W} and {@code b} is bitwise the base network's; merged, the
 * output matches the unmerged one; calls in the wrong state are refused and change nothing.
 */
class MergeStateMachineTest {

    enum Action { FIT, MERGE, UNMERGE }

    private static final DataSet DATA = Nets.task(DataType.FLOAT, 5, 6, 32);

    @Property(tries = 10)
    void mergeStateFollowsTheModel(@ForAll @Size(min = 1, max = 12) List<Action> actions) {
        MultiLayerNetwork base = Nets.mln(DataType.FLOAT, new Adam(0.02), 9);
        MultiLayerNetwork lora = LoraDl4j.apply(base, LoraConfig.builder().rank(2).alpha(4).build(), "layer0", "layer2");
        boolean merged = false;
        INDArray unmergedOutput = lora.output(DATA.getFeatures());
        for (Action a : actions) {
            INDArray before = lora.params().dup();
            switch (a) {
                case FIT -> {
                    if (merged) {
                        assertThrows(IllegalStateException.class, () -> lora.fit(DATA));
                        assertBitwise(before, lora.params(), "parameters after a refused fit");
                    } else {
                        lora.fit(DATA);
                        unmergedOutput = lora.output(DATA.getFeatures());
                    }
                }
                case MERGE -> {
                    if (merged) {
                        assertThrows(IllegalStateException.class, () -> LoraDl4j.merge(lora));
                        assertBitwise(before, lora.params(), "parameters after a refused merge");
                    } else {
                        LoraDl4j.merge(lora);
                        merged = true;
                    }
                }
                case UNMERGE -> {
                    if (merged) {
                        LoraDl4j.unmerge(lora);
                        merged = false;
                    } else {
                        assertThrows(IllegalStateException.class, () -> LoraDl4j.unmerge(lora));
                        assertBitwise(before, lora.params(), "parameters after a refused unmerge");
                    }
                }
            }
            assertEquals(merged, LoraDl4j.isMerged(lora), "merged state after " + a);
            INDArray out = lora.output(DATA.getFeatures());
            if (merged) {
                assertTrue(unmergedOutput.equalsWithEps(out, 1e-5), "merged output after " + a);
            } else {
                assertBitwise(unmergedOutput, out, "unmerged output after " + a);
                for (int i = 0; i < base.getnLayers(); i++) {
                    assertBitwise(base.getLayer(i).getParam("W"), lora.getLayer(i).getParam("W"), "W of layer " + i);
                    assertBitwise(base.getLayer(i).getParam("b"), lora.getLayer(i).getParam("b"), "b of layer " + i);
                }
            }
        }
    }
}
