package io.github.lora4j.samediff;

import static io.github.lora4j.TestData.assertBitwiseEquals;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.model.LoraModel;
import io.github.lora4j.samediff.Graphs.Kind;
import java.util.List;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * {@link LoraSameDiff} seeds each weight's adapter with {@link LoraConfig#forModule} of its module name, the rule
 * {@link LoraModel} applies: the initial A equals that of a layer wrapped with {@code cfg.forModule(module)} and that
 * of a {@code LoraModel} module of that name over the same weight.
 */
class LoraSameDiffSeedTest {

    @ParameterizedTest
    @EnumSource(Kind.class)
    void theInitialAIsLoraModelsForTheSameModuleName(Kind kind) {
        LoraConfig cfg = LoraConfig.builder().rank(3).alpha(6).seed(23).build();
        SameDiff sd = Graphs.build(kind, DataType.DOUBLE, 5);
        INDArray w0 = sd.getArrForVarName("fc0/weight").dup();
        INDArray w1 = sd.getArrForVarName("fc1/weight").dup();
        LoraSameDiffModel lora = LoraSameDiff.apply(sd, cfg, "fc0", "fc1");
        LoraModel model = LoraModel.builder().add("fc0", w0, null, LoraSameDiffApplyTest.layout(kind))
                .add("fc1", w1, null, LoraSameDiffApplyTest.layout(kind)).build();
        model.applyLora(cfg, List.of("fc0", "fc1"));
        for (String m : List.of("fc0", "fc1")) {
            INDArray a = lora.adapter(m + "/weight").currentA();
            LoraLinear byHand = LoraLinear.wrap(m.equals("fc0") ? w0.dup() : w1.dup(), null, cfg.forModule(m),
                    LoraSameDiffApplyTest.layout(kind));
            assertBitwiseEquals(byHand.loraA("default"), a, kind + " " + m + " vs cfg.forModule");
            assertBitwiseEquals(model.module(m).loraA("default"), a, kind + " " + m + " vs LoraModel");
        }
    }
}
