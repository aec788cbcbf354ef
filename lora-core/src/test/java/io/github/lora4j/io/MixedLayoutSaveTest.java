package io.github.lora4j.io;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.WeightLayout;
import io.github.lora4j.model.LoraModel;
import java.io.IOException;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * Issue 29, item 12: a model mixing {@code [out, in]} and {@code [in, out]} weights (GPT-2's Conv1D beside an
 * {@code [out, in]} head, mixed SameDiff ops) was refused by every save, because one {@code fan_in_fan_out} "had" to
 * hold for all modules. {@code lora_A [r, in]} and {@code lora_B [out, r]} do not depend on the layout, and PEFT
 * overrides the flag per layer type; such models now save, and read back into the same layers computing the same.
 */
class MixedLayoutSaveTest {

    @TempDir
    Path tmp;

    private static final LoraConfig CFG = LoraConfig.builder().rank(2).alpha(4).build();

    /** GPT-2-like: two Conv1D projections ([in, out]) and an [out, in] head, with trained (random) adapters. */
    private static Map<String, LoraLinear> gpt2Like() {
        Map<String, LoraLinear> m = new LinkedHashMap<>();
        m.put("transformer.h.0.attn.c_attn", IoTestData.layer(DataType.FLOAT, 1, 8, 24, CFG, WeightLayout.IN_OUT));
        m.put("transformer.h.0.mlp.c_fc", IoTestData.layer(DataType.FLOAT, 11, 8, 16, CFG, WeightLayout.IN_OUT));
        m.put("lm_head", IoTestData.layer(DataType.FLOAT, 21, 8, 10, CFG, WeightLayout.OUT_IN));
        return m;
    }

    /** The same base weights without adapters. */
    private static Map<String, LoraLinear> bare(Map<String, LoraLinear> like) {
        Map<String, LoraLinear> m = new LinkedHashMap<>();
        like.forEach((p, l) -> m.put(p, LoraLinear.base(l.weight().dup(), null, l.layout())));
        return m;
    }

    @Test
    void aModelMixingLayoutsIsSavedAndReadBackComputingTheSame() throws IOException {
        Map<String, LoraLinear> model = gpt2Like();
        PeftAdapterFiles.save(tmp, model, "default");
        PeftAdapter file = PeftAdapterFiles.read(tmp);
        assertTrue(file.config().fanInFanOut(), "most saved modules are [in, out]");
        assertEquals("MIXED", file.metadata().get("lora4j.layout"));
        assertEquals(List.of(2L, 8L), List.of(file.layout().loraModules().get("lm_head").shapeA()[0],
                file.layout().loraModules().get("lm_head").shapeA()[1]), "A [r, in] whatever the layout");

        Map<String, LoraLinear> fresh = bare(model);
        PeftAdapterFiles.load(tmp, fresh, "default");
        INDArray x = gaussian(DataType.FLOAT, 99, 1.0, 5, 8);
        for (String p : model.keySet()) {
            fresh.get(p).setActiveAdapter("default");
            assertBitwiseEquals(model.get(p).loraA("default"), fresh.get(p).loraA("default"), p + " A");
            assertBitwiseEquals(model.get(p).loraB("default"), fresh.get(p).loraB("default"), p + " B");
            assertBitwiseEquals(model.get(p).forward(x), fresh.get(p).forward(x), p + " forward");
        }
    }

    @Test
    void fanInFanOutFollowsTheMajorityAndIsFalseOnATie() throws IOException {
        Map<String, LoraLinear> tie = new LinkedHashMap<>();
        tie.put("a", IoTestData.layer(DataType.FLOAT, 1, 4, 3, CFG, WeightLayout.IN_OUT));
        tie.put("b", IoTestData.layer(DataType.FLOAT, 2, 4, 3, CFG, WeightLayout.OUT_IN));
        PeftAdapterFiles.save(tmp, tie, "default");
        assertFalse(PeftAdapterFiles.read(tmp).config().fanInFanOut());
        PeftAdapterFiles.save(tmp, Map.of("a", tie.get("a")), "default");
        PeftAdapter inOut = PeftAdapterFiles.read(tmp);
        assertTrue(inOut.config().fanInFanOut());
        assertEquals("IN_OUT", inOut.metadata().get("lora4j.layout"));
    }

    @Test
    void aLoraModelMixingLayoutsSavesAndLoads() throws IOException {
        LoraModel model = LoraModel.builder()
                .linearInOut("h.0.attn.c_attn", gaussian(DataType.FLOAT, 1, 0.5, 8, 24), null)
                .linear("lm_head", gaussian(DataType.FLOAT, 2, 0.5, 10, 24), null)
                .build().applyLora(CFG, List.of("c_attn", "lm_head"));
        model.module("lm_head").setAdapterWeights("default", gaussian(DataType.FLOAT, 3, 0.5, 2, 24),
                gaussian(DataType.FLOAT, 4, 0.5, 10, 2));
        model.save(tmp, "default");
        LoraModel back = LoraModel.builder()
                .linearInOut("h.0.attn.c_attn", gaussian(DataType.FLOAT, 1, 0.5, 8, 24), null)
                .linear("lm_head", gaussian(DataType.FLOAT, 2, 0.5, 10, 24), null)
                .build();
        back.load(tmp, "default");
        assertBitwiseEquals(model.module("lm_head").loraB("default"), back.module("lm_head").loraB("default"), "B");
    }
}
