package io.github.lora4j.train;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.GradientCheckTest;
import io.github.lora4j.LoraAdapter;
import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraEmbedding;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.model.LoraModel;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.learning.config.Sgd;

/**
 * A trainer built over a model trains its targeted embeddings too (issue 30: it used to take the linear modules only,
 * so a targeted {@code embed_tokens} kept its initial adapter and was missing from the saved trainer state).
 */
class EmbeddingTrainingTest {

    private static final int NUM = 10;
    private static final int DIM = 4;
    private static final int OUT = 3;
    private static final long[] IDS = {3, 7, 3, 0, 9};

    /** {@code ids -> tok [10, 4] -> head [3, 4]}, no LoRA, from fixed seeds. */
    private static LoraModel base(DataType type) {
        return LoraModel.builder()
                .embedding("tok", gaussian(type, 1, 1, NUM, DIM))
                .linear("head", gaussian(type, 2, 0.5, OUT, DIM), gaussian(type, 3, 0.1, OUT))
                .build();
    }

    /** {@link #base} with LoRA r = 2 on both modules, A and B random (so both learn from the first step). */
    private static LoraModel model(DataType type) {
        LoraModel m = base(type).applyLora(LoraConfig.builder().rank(2).alpha(4).build(), List.of("tok", "head"));
        m.embedding("tok").setAdapterWeights("default", gaussian(type, 4, 0.5, 2, NUM), gaussian(type, 5, 0.5, DIM, 2));
        m.module("head").setAdapterWeights("default", gaussian(type, 6, 0.5, 2, DIM), gaussian(type, 7, 0.5, OUT, 2));
        return m;
    }

    /** {@code dL/dy} of step {@code t} in the model's type: the loss is {@code L = sum(y ⊙ g)}. */
    private static INDArray g(LoraModel m, int t) {
        return gaussian(m.embedding("tok").dataType(), 100 + t, 1, IDS.length, OUT);
    }

    private static INDArray ids() {
        return Nd4j.createFromArray(IDS);
    }

    private static void forwardBackward(LoraModel m, int t) {
        m.train();
        m.forward("head", m.forward("tok", ids()));
        m.embedding("tok").backward(m.module("head").backward(g(m, t)));
    }

    private static double loss(LoraModel m, int t) {
        return m.forward("head", m.forward("tok", ids())).mul(g(m, t)).sumNumber().doubleValue();
    }

    @Test
    void anSgdStepMovesTheEmbeddingAdapterByItsFiniteDifferenceGradientAndLeavesTheTable() {
        LoraModel model = model(DataType.DOUBLE);
        LoraEmbedding tok = model.embedding("tok");
        INDArray table = tok.table().dup();
        INDArray headW = model.module("head").weight().dup();
        LoraAdapter ad = tok.adapter("default");
        INDArray a0 = ad.a().dup();
        INDArray b0 = ad.b().dup();
        INDArray ids = ids();
        INDArray g = g(model, 0);
        // The gradients of this step, checked against finite differences of L = sum(y ⊙ g) first
        forwardBackward(model, 0);
        INDArray gradA = ad.gradA().dup();
        INDArray gradB = ad.gradB().dup();
        model.eval();
        GradientCheckTest.checkAgainstDifferences("tok dL/dA", ad.a(), gradA, () -> loss(model, 0));
        GradientCheckTest.checkAgainstDifferences("tok dL/dB", ad.b(), gradB, () -> loss(model, 0));
        assertTrue(gradA.getColumn(5).norm2Number().doubleValue() == 0, "token 5 was not looked up: no gradient");
        model.zeroGrad();

        // docs/peft-parity.md: embedding-training
        LoraTrainer trainer = LoraTrainer.builder().updater(new Sgd(0.1)).build(model);  // tok and head
        model.train();
        model.forward("head", model.forward("tok", ids));                     // ids -> embedding -> linear
        model.embedding("tok").backward(model.module("head").backward(g));    // fills tok's gradA and gradB
        trainer.step();                                                       // steps tok's A, B too; T unchanged
        // end
        assertEquals(List.of("tok", "head"), trainer.layerNames(), "model order: the embedding first");
        assertEquals(List.of(tok, model.module("head")), trainer.layers());
        // Sgd: A' = A − lr·dL/dA, B' likewise, bit for bit as the update is one multiply and one subtraction
        assertBitwiseEquals(a0.sub(gradA.mul(0.1)), ad.a(), "tok A after one Sgd step");
        assertBitwiseEquals(b0.sub(gradB.mul(0.1)), ad.b(), "tok B after one Sgd step");
        assertEquals(0.0, ad.gradA().norm2Number().doubleValue(), "gradients zeroed by the step");
        assertBitwiseEquals(table, tok.table(), "the table after a step");
        assertBitwiseEquals(headW, model.module("head").weight(), "head's W after a step");
        assertTrue(model.module("head").adapter("default").gradA().norm2Number().doubleValue() == 0,
                "head was stepped too (its gradients zeroed)");
    }

    @Test
    void aSavedTrainerStateHoldsTheEmbeddingsMomentsAndResumesBitwise(@TempDir Path dir) throws IOException {
        // FLOAT: the adapter files are F32, so a FLOAT model reloads its adapters bit for bit
        LoraModel uninterrupted = model(DataType.FLOAT);
        LoraTrainer tu = LoraTrainer.builder().updater(new Adam(1e-2)).build(uninterrupted);
        // Adam keeps 2 moments per element: r·(num + dim) for tok, r·(in + out) for head
        assertEquals(2L * 2 * (NUM + DIM) + 2L * 2 * (DIM + OUT), tu.updaterStateSize());
        INDArray table = uninterrupted.embedding("tok").table().dup();
        for (int i = 0; i < 3; i++) {
            forwardBackward(uninterrupted, i);
            tu.step();
        }
        uninterrupted.save(dir, "default");
        tu.saveState(dir);
        String json = Files.readString(dir.resolve(LoraTrainer.STATE_CONFIG_FILE));
        assertTrue(json.contains("\"tok/default/lora_A\"") && json.contains("\"tok/default/lora_B\""), json);

        LoraModel resumed = base(DataType.FLOAT);
        resumed.load(dir, "default");
        LoraTrainer tr = LoraTrainer.loadState(dir, resumed);
        assertBitwiseEquals(tu.updaterStateCopy(uninterrupted.embedding("tok"), "default"),
                tr.updaterStateCopy(resumed.embedding("tok"), "default"), "tok's Adam moments after loadState");
        for (int i = 3; i < 5; i++) {
            forwardBackward(uninterrupted, i);
            tu.step();
            forwardBackward(resumed, i);
            tr.step();
        }
        LoraAdapter u = uninterrupted.embedding("tok").adapter("default");
        LoraAdapter r = resumed.embedding("tok").adapter("default");
        assertBitwiseEquals(u.a(), r.a(), "tok A, resumed vs uninterrupted");
        assertBitwiseEquals(u.b(), r.b(), "tok B, resumed vs uninterrupted");
        LoraLinear hu = uninterrupted.module("head");
        LoraLinear hr = resumed.module("head");
        assertBitwiseEquals(hu.adapter("default").a(), hr.adapter("default").a(), "head A, resumed vs uninterrupted");
        assertBitwiseEquals(table, uninterrupted.embedding("tok").table(), "the table after five Adam steps");
    }
}
