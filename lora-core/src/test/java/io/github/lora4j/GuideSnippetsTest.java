package io.github.lora4j;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.io.PeftAdapter;
import io.github.lora4j.io.PeftAdapterConfig;
import io.github.lora4j.io.PeftAdapterFiles;
import io.github.lora4j.io.PeftAdapterLayout;
import io.github.lora4j.model.LoraModel;
import io.github.lora4j.train.LoraTrainer;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.Adam;

/**
 * The Java snippets of README.md and the guides docs/core.md, docs/models.md, docs/peft-files.md, and docs/training.md,
 * run: each region between {@code // <page>: <name>} and {@code // end} is shown by its page as it
 * is here (lora-examples' {@code DocSnippetsTest} checks that), and the assertions after it check that it did what
 * the page says.
 */
class GuideSnippetsTest {

    @TempDir
    Path dir;

    @Test
    void quickStart() {
        INDArray weight = gaussian(DataType.FLOAT, 1, 0.1, 32, 16);
        INDArray bias = gaussian(DataType.FLOAT, 2, 0.1, 32);
        INDArray x = gaussian(DataType.FLOAT, 3, 1, 4, 16);
        INDArray dLdy = gaussian(DataType.FLOAT, 4, 1, 4, 32);
        INDArray w0 = weight.dup();
        // README.md, docs/core.md: quick start
        LoraLinear layer = LoraLinear.wrap(weight, bias, LoraConfig.builder().rank(8).alpha(16).build()); // W [out, in]
        layer.train();
        INDArray y  = layer.forward(x);        // x [n, in] (or [..., in]) -> [n, out]
        INDArray dx = layer.backward(dLdy);    // dL/dx; dL/dA, dL/dB accumulate in layer.adapter("default")
        layer.eval().merge();                  // W += s·B·A: inference at base cost; unmerge() restores W bit for bit
        // end
        assertEquals(List.of(4L, 32L), List.of(y.shape()[0], y.shape()[1]));
        assertEquals(16, dx.shape()[1]);
        assertTrue(layer.adapter("default").gradB().norm2Number().doubleValue() > 0, "dL/dB accumulated");
        layer.unmerge();
        assertBitwiseEquals(w0, weight, "W after merge and unmerge");
    }

    @Test
    void manyAdaptersOnOneLayer() {
        INDArray x = gaussian(DataType.FLOAT, 5, 1, 4, 64);
        LoraLinear layer = LoraLinear.wrap(gaussian(DataType.FLOAT, 6, 0.1, 48, 64), null,
                LoraConfig.builder().rank(4).alpha(8).build());
        layer.setAdapterWeights("default", gaussian(DataType.FLOAT, 7, 0.1, 4, 64),
                gaussian(DataType.FLOAT, 8, 0.1, 48, 4));
        // docs/core.md: many adapters
        layer.addAdapter("legal", LoraConfig.builder().rank(16).alpha(32).build());
        layer.setActiveAdapter("legal");                                     // forward, backward, merge use "legal"
        layer.addWeightedAdapter("mix", List.of("default", "legal"), new double[] {0.7, 0.3});      // exact (PEFT "cat")
        layer.addWeightedAdapterSvd("mix8", List.of("default", "legal"), new double[] {0.7, 0.3}, 8); // best rank-8 approx.
        INDArray y = layer.forward(x, new String[] {"default", "legal", LoraLinear.BASE_MODEL, null /* base */});
        // end
        assertEquals("legal", layer.activeAdapter());
        assertEquals(List.of("default", "legal", "mix", "mix8"), List.copyOf(layer.adapterNames()));
        layer.eval();
        layer.setActiveAdapter("default");
        INDArray own = layer.forward(x.getRow(0, true));
        assertTrue(TestData.normwiseRelativeError(own, y.getRow(0, true)) < 1e-6, "row 0 uses adapter default");
    }

    private static LoraModel buildFromBaseWeights() {
        return LoraModel.builder()
                .embedding("model.embed_tokens", gaussian(DataType.FLOAT, 10, 1, 50, 16))
                .linear("model.layers.0.self_attn.q_proj", gaussian(DataType.FLOAT, 11, 0.1, 16, 16), null)
                .linear("model.layers.0.self_attn.v_proj", gaussian(DataType.FLOAT, 12, 0.1, 16, 16), null)
                .linearInOut("model.layers.0.mlp.fc", gaussian(DataType.FLOAT, 13, 0.1, 16, 32),
                        gaussian(DataType.FLOAT, 14, 0.1, 32))
                .linear("score", gaussian(DataType.FLOAT, 15, 0.1, 3, 32), gaussian(DataType.FLOAT, 16, 0.1, 3))
                .build();
    }

    @Test
    void aModel() throws IOException {
        LoraModel base = buildFromBaseWeights();
        INDArray table = base.embedding("model.embed_tokens").table();
        INDArray wq = base.module("model.layers.0.self_attn.q_proj").weight();
        INDArray wv = base.module("model.layers.0.self_attn.v_proj").weight();
        INDArray wFc = base.module("model.layers.0.mlp.fc").weight();
        INDArray bFc = base.module("model.layers.0.mlp.fc").bias();
        INDArray wHead = base.module("score").weight();
        INDArray bHead = base.module("score").bias();
        INDArray trainedHead = gaussian(DataType.FLOAT, 17, 0.1, 3, 32);
        INDArray trainedBias = gaussian(DataType.FLOAT, 18, 0.1, 3);
        INDArray x = gaussian(DataType.FLOAT, 19, 1, 4, 16);
        INDArray tokenIds = Nd4j.createFromArray(3L, 1L, 4L, 1L, 5L);
        // docs/models.md: a model
        LoraModel model = LoraModel.builder()
                .embedding("model.embed_tokens", table)                    // [num_embeddings, dim], referenced
                .linear("model.layers.0.self_attn.q_proj", wq, null)       // W [out, in], referenced
                .linear("model.layers.0.self_attn.v_proj", wv, null)
                .linearInOut("model.layers.0.mlp.fc", wFc, bFc)            // W [in, out] (DL4J DenseLayer, GPT-2 Conv1D), never copied
                .linear("score", wHead, bHead)
                .build();
        model.applyLora(LoraConfig.builder().rank(8).alpha(16).build(), List.of("q_proj", "v_proj"));
        System.out.println(model.trainableParametersReport());
        // PEFT's exact format, e.g. for one 4096 x 4096 module at r = 8:
        // trainable params: 65,536 || all params: 16,842,752 || trainable%: 0.3891
        INDArray y = model.forward("model.layers.0.self_attn.q_proj", x);
        INDArray e = model.forward("model.embed_tokens", tokenIds);        // ids [...] -> [..., dim]
        model.setModuleToSave("score", trainedHead, trainedBias);          // PEFT's modules_to_save: a copy replaces the head
        model.setBaseModelNameOrPath("meta-llama/Llama-3.2-1B");
        model.save(dir, "default");                                        // PEFT adapter_model.safetensors + adapter_config.json
        LoraModel fresh = buildFromBaseWeights();
        fresh.load(dir, "default");                                        // same outputs, bit for bit
        Map<String, INDArray> copies = model.mergedWeightsCopy();          // W + s·B·A per module, new arrays; model untouched
        Map<String, INDArray> plain = model.mergeAndUnload();              // W += s·B·A in the caller's arrays; wrappers dropped
        // end
        assertEquals(List.of(5L, 16L), List.of(e.shape()[0], e.shape()[1]));
        assertBitwiseEquals(y, fresh.forward("model.layers.0.self_attn.q_proj", x), "reloaded output");
        assertBitwiseEquals(copies.get("model.layers.0.self_attn.q_proj"), plain.get("model.layers.0.self_attn.q_proj"),
                "the copy and the in-place merge");
        assertTrue(plain.get("model.layers.0.self_attn.q_proj") == wq, "mergeAndUnload works in the caller's array");
    }

    @Test
    void peftFiles() throws IOException {
        LoraConfig config = LoraConfig.builder().rank(4).alpha(8).build();
        LoraLinear q = LoraLinear.wrap(gaussian(DataType.FLOAT, 20, 0.1, 16, 16), null, config);
        LoraLinear v = LoraLinear.wrap(gaussian(DataType.FLOAT, 21, 0.1, 16, 16), null, config);
        Map<String, LoraEmbedding> embs = Map.of("model.embed_tokens",
                LoraEmbedding.wrap(gaussian(DataType.FLOAT, 22, 1, 50, 16), config));
        INDArray w = gaussian(DataType.FLOAT, 23, 0.1, 3, 16);
        INDArray b = gaussian(DataType.FLOAT, 24, 0.1, 3);
        // docs/peft-files.md: save, load, read
        Map<String, LoraLinear> modules = Map.of(
                "model.layers.0.self_attn.q_proj", q,
                "model.layers.0.self_attn.v_proj", v);
        PeftAdapterFiles.save(dir, modules, "default");                     // F32; or DataType.BFLOAT16, HALF, DOUBLE
        PeftAdapterConfig cfg = PeftAdapterFiles.load(dir, modules, "sql"); // adds adapter "sql" to q and v
        q.setActiveAdapter("sql");
        PeftAdapter a = PeftAdapterFiles.read(dir);                          // everything in the files, no model needed
        PeftAdapterFiles.saver().linears(modules).embeddings(embs)          // embeddings, modules_to_save, names, provenance
                .modulesToSave(Map.of("score", Map.of("weight", w, "bias", b)))
                .baseModelNameOrPath("gpt2").save(dir, "default");
        // end
        assertEquals(4, cfg.r());
        assertTrue(q.adapterNames().contains("sql") && v.adapterNames().contains("sql"));
        assertEquals(2, a.modules(PeftAdapterLayout.Kind.LINEAR).size());
        assertEquals("gpt2", PeftAdapterFiles.read(dir).config().baseModelNameOrPath().orElseThrow());
    }

    private static LoraModel baseModel() {
        return LoraModel.builder()
                .linear("model.layers.0.self_attn.q_proj", gaussian(DataType.FLOAT, 30, 0.1, 16, 16), null)
                .linear("model.layers.0.self_attn.v_proj", gaussian(DataType.FLOAT, 31, 0.1, 16, 16), null)
                .build();
    }

    private static void train(LoraModel model, LoraTrainer trainer, int steps) {
        INDArray x = gaussian(DataType.FLOAT, 32, 1, 8, 16);
        model.train();
        for (int i = 0; i < steps; i++) {
            for (String path : List.of("model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj")) {
                INDArray y = model.forward(path, x);
                model.module(path).backward(y.sub(x), false);
            }
            trainer.step();
        }
    }

    @Test
    void trainingLayers() {
        LoraConfig cfg = LoraConfig.builder().rank(4).alpha(8).build();
        INDArray w1 = gaussian(DataType.FLOAT, 40, 0.1, 32, 16);
        INDArray w1Before = w1.dup();
        LoraLinear layer1 = LoraLinear.wrap(w1, null, cfg);
        LoraLinear layer2 = LoraLinear.wrap(gaussian(DataType.FLOAT, 41, 0.1, 8, 32), null, cfg);
        INDArray x = gaussian(DataType.FLOAT, 42, 1, 16, 16);
        INDArray target = gaussian(DataType.FLOAT, 43, 1, 16, 8);
        int steps = 30;
        INDArray b1Before = layer1.adapter("default").b().dup();
        double first = Double.NaN;
        // docs/training.md: layers
        LoraTrainer trainer = LoraTrainer.builder()
                .updater(new Adam(1e-3))        // any IUpdater; schedules see trainer.iteration() / trainer.epoch()
                .clipGradientNorm(1.0)          // optional: global L2 norm over all trained gradients
                .weightDecay(0.01)              // optional: decoupled, so Adam + weightDecay = AdamW
                .build(layer1, layer2);
        layer1.train(); layer2.train();         // dropout (LoraConfig.dropout) is on in training mode only
        for (int step = 0; step < steps; step++) {
            INDArray h = layer1.forward(x);
            INDArray y = layer2.forward(h);
            layer1.backward(layer2.backward(y.sub(target)));   // dL/dy of ½‖y − target‖²
            double gradNorm = trainer.step();   // update, then zero the gradients; returns the norm before clipping
        }
        trainer.nextEpoch();                    // for epoch-based schedules
        // end
        assertEquals(steps, trainer.iteration());
        assertEquals(1, trainer.epoch());
        assertTrue(layer1.adapter("default").b().sub(b1Before).norm2Number().doubleValue() > 0, "B trained");
        assertBitwiseEquals(w1Before, w1, "W after training");
    }

    @Test
    void trainingAModelSavingAndResuming() throws IOException {
        // docs/training.md: save and resume
        LoraModel model = baseModel();                            // built from the base weights
        model.applyLora(LoraConfig.builder().rank(8).alpha(16).build(), List.of("q_proj", "v_proj"));
        LoraTrainer trainer = LoraTrainer.builder().updater(new Adam(1e-3)).build(model); // every targeted linear and embedding module
        train(model, trainer, 10);                                // forward, backward, trainer.step()
        model.save(dir, "default");                               // the adapter (PEFT files)
        trainer.saveState(dir);                                   // trainer_state.safetensors + trainer_state.json

        // Later, in a new process: the same base weights, then
        LoraModel resumed = baseModel();                          // no LoRA yet
        resumed.load(dir, "default");
        LoraTrainer continued = LoraTrainer.loadState(dir, resumed);   // next step() continues the saved run
        // end
        assertTrue(Files.isRegularFile(dir.resolve(LoraTrainer.STATE_TENSORS_FILE)));
        assertEquals(10, continued.iteration());
        train(model, trainer, 3);
        train(resumed, continued, 3);
        for (String p : List.of("model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj")) {
            assertBitwiseEquals(model.module(p).adapter("default").a(), resumed.module(p).adapter("default").a(),
                    "A of " + p + " after resuming");
        }
    }
}
