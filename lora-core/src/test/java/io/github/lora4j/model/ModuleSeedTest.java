package io.github.lora4j.model;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.bits;
import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraEmbedding;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.WeightLayout;
import java.util.Arrays;
import java.util.List;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.AlphaChars;
import net.jqwik.api.constraints.StringLength;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * The seed rule (issue 14): one {@link LoraConfig} wrapped into two layers gives both the same {@code A} and the same
 * dropout masks; {@link LoraConfig#forModule} gives each module its own stream, and it is the rule {@link LoraModel}
 * applies, so a layer wrapped by hand with {@code cfg.forModule(path)} starts exactly where the model's module does.
 */
class ModuleSeedTest {

    private static final LoraConfig CFG = LoraConfig.builder().rank(3).alpha(6).dropout(0.5).seed(17).build();

    @Test
    void oneConfigWrappedTwiceGivesTheSameAAndTheSameDropoutMasks() {
        INDArray w = gaussian(DataType.DOUBLE, 1, 0.5, 6, 9);
        LoraLinear one = LoraLinear.wrap(w.dup(), null, CFG);
        LoraLinear two = LoraLinear.wrap(w.dup(), null, CFG);
        assertBitwiseEquals(one.loraA("default"), two.loraA("default"), "same config, same A");
        INDArray b = gaussian(DataType.DOUBLE, 2, 0.5, 6, 3);
        one.setAdapterWeights("default", one.loraA("default"), b);
        two.setAdapterWeights("default", two.loraA("default"), b);
        one.train();
        two.train();
        INDArray x = gaussian(DataType.DOUBLE, 3, 1, 4, 9);
        assertBitwiseEquals(one.forward(x), two.forward(x), "same config, same dropout masks");
    }

    @Test
    void forModuleGivesEachPathItsOwnStreamAndKeepsEveryOtherField() {
        INDArray w = gaussian(DataType.DOUBLE, 1, 0.5, 6, 9);
        LoraConfig a = CFG.forModule("a");
        LoraConfig b = CFG.forModule("b");
        assertNotEquals(a.seed(), b.seed());
        assertNotEquals(CFG.seed(), a.seed());
        assertEquals(CFG.toBuilder().seed(a.seed()).build(), a, "only the seed changes");
        assertEquals(a, CFG.forModule("a"), "the same path reproduces");
        assertEquals(CFG, CFG, "the original is unchanged");
        assertEquals(17, CFG.seed());

        LoraLinear la = LoraLinear.wrap(w.dup(), null, a);
        LoraLinear lb = LoraLinear.wrap(w.dup(), null, b);
        assertFalse(Arrays.equals(bits(la.loraA("default")), bits(lb.loraA("default"))), "a and b differ in A");
        assertBitwiseEquals(la.loraA("default"), LoraLinear.wrap(w.dup(), null, CFG.forModule("a")).loraA("default"),
                "forModule(\"a\") twice");
        INDArray bb = gaussian(DataType.DOUBLE, 2, 0.5, 6, 3);
        la.setAdapterWeights("default", la.loraA("default"), bb);
        lb.setAdapterWeights("default", la.loraA("default"), bb);    // same A and B: only the masks can differ
        la.train();
        lb.train();
        INDArray x = gaussian(DataType.DOUBLE, 3, 1, 4, 9);
        assertFalse(Arrays.equals(bits(la.forward(x)), bits(lb.forward(x))), "a and b drop different elements");
        assertThrows(NullPointerException.class, () -> CFG.forModule(null));
    }

    @Property(tries = 30)
    void aModelsModuleStartsWhereALayerWrappedWithForModuleDoes(@ForAll @AlphaChars @StringLength(min = 1, max = 12) String name,
                                                               @ForAll long seed) {
        LoraConfig cfg = LoraConfig.builder().rank(2).alpha(4).seed(seed).build();
        String path = "model.layers.3." + name;
        INDArray w = gaussian(DataType.FLOAT, 4, 0.5, 5, 7);
        INDArray wio = gaussian(DataType.FLOAT, 5, 0.5, 7, 5);
        INDArray table = gaussian(DataType.FLOAT, 6, 0.5, 11, 4);
        LoraModel model = LoraModel.builder().linear(path, w, null).linearInOut(path + "_io", wio, null)
                .embedding(path + "_emb", table).build();
        model.applyLora(cfg, List.of(name, name + "_io", name + "_emb"));
        model.addAdapter("second", cfg.toBuilder().rank(1).build());

        LoraLinear byHand = LoraLinear.wrap(w.dup(), null, cfg.forModule(path));
        byHand.addAdapter("second", cfg.toBuilder().rank(1).build().forModule(path));
        for (String n : List.of("default", "second")) {
            assertBitwiseEquals(byHand.loraA(n), model.module(path).loraA(n), path + " " + n);
        }
        LoraLinear io = LoraLinear.wrap(wio.dup(), null, cfg.forModule(path + "_io"), WeightLayout.IN_OUT);
        assertBitwiseEquals(io.loraA("default"), model.module(path + "_io").loraA("default"), "IN_OUT module");
        LoraEmbedding emb = LoraEmbedding.wrap(table.dup(), cfg.forModule(path + "_emb"));
        assertBitwiseEquals(emb.adapter("default").b(), model.embedding(path + "_emb").adapter("default").b(),
                "embedding (its B is the random factor)");
        assertFalse(Arrays.equals(bits(model.module(path).loraA("default")),
                bits(LoraLinear.wrap(w.dup(), null, cfg).loraA("default"))), "the model does not use the bare seed");
    }
}
