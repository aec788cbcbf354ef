package io.github.lora4j;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.io.PeftAdapter;
import io.github.lora4j.io.PeftAdapterConfig;
import io.github.lora4j.io.PeftAdapterFiles;
import io.github.lora4j.model.LoraModel;
import io.github.lora4j.train.LoraTrainer;
import java.io.IOException;
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
 * The Java snippets of README.md, docs/layers.md, docs/training.md, docs/peft-files.md and docs/models.md, run. Each
 * region between {@code // <page>: <name>} and {@code // end} is one code block of that page; lora-examples'
 * {@code DocSnippetsTest} checks that every page's blocks are regions and every region is shown.
 */
class GuideSnippetsTest {

    @TempDir
    Path tmp;

    private static final DataType F = DataType.FLOAT;

    @Test
    void quickStart() {
        INDArray weight = gaussian(F, 1, 0.3, 6, 4);
        INDArray w0 = weight.dup();
        INDArray bias = gaussian(F, 2, 0.1, 6);
        INDArray x = gaussian(F, 3, 1, 5, 4);
        INDArray dLdy = gaussian(F, 4, 1, 5, 6);
        // README.md: quick start
        LoraLinear layer = LoraLinear.wrap(weight, bias, LoraConfig.builder().rank(2).alpha(4).build()); // W [out, in]
        layer.train();
        INDArray y  = layer.forward(x);        // x [n, in] (or [..., in]) -> [n, out]
        INDArray dx = layer.backward(dLdy);    // dL/dx; dL/dA, dL/dB accumulate in layer.adapter("default")
        layer.eval().merge();                  // W += s·B·A: inference at base cost; unmerge() restores W bit for bit
        // end
        assertArrayEquals(new long[] {5, 6}, y.shape());
        assertArrayEquals(new long[] {5, 4}, dx.shape());
        assertTrue(layer.adapter("default").gradB().amaxNumber().doubleValue() > 0, "gradB accumulated");
        layer.unmerge();
        assertBitwiseEquals(w0, weight, "W after merge and unmerge");
    }

    @Test
    void wrapMergeUnmerge() {
        INDArray weight = gaussian(F, 5, 0.3, 8, 6);
        INDArray w0 = weight.dup();
        INDArray x = gaussian(F, 6, 1, 3, 6);
        // docs/layers.md: wrap
        LoraConfig cfg = LoraConfig.builder().rank(4).alpha(8).dropout(0.05).seed(42).build();
        LoraLinear layer = LoraLinear.wrap(weight, null, cfg);                         // W [out, in], referenced
        LoraLinear inOut = LoraLinear.wrap(weight.transpose(), null, cfg, WeightLayout.IN_OUT); // W [in, out], no copy
        layer.eval();
        INDArray before = layer.forward(x);    // B = 0: exactly the base output
        layer.merge();                         // EXACT (default): W += s·B·A in place
        layer.unmerge();                       // W back bit for bit, after any number of cycles
        layer.merge(MergeMode.FAST);           // one gemm; its unmerge may leave an ulp
        layer.unmerge();
        // end
        assertBitwiseEquals(x.mmul(w0.transpose()), before, "a fresh adapter is the base");
        assertEquals(inOut.adapter("default").a().shapeInfoToString(), layer.adapter("default").a()
                .shapeInfoToString());
        assertTrue(weight.equalsWithEps(w0, 1e-6));
    }

    @Test
    void embeddingsAndConvolutions() {
        INDArray table = gaussian(F, 7, 1, 10, 4);
        INDArray kernel = gaussian(F, 8, 0.3, 5, 3, 3, 3);
        INDArray kernelBias = gaussian(F, 9, 0.1, 5);
        INDArray images = gaussian(F, 10, 1, 2, 3, 6, 6);
        LoraConfig cfg = LoraConfig.builder().rank(2).alpha(4).build();
        // docs/layers.md: other layers
        LoraEmbedding emb = LoraEmbedding.wrap(table, cfg);     // table [num_embeddings, dim]; A = 0, B ~ N(0, 1)
        INDArray e = emb.forward(3, 1, 4);                      // T[ids] + s·A[:, ids]ᵀ Bᵀ: [3, dim]
        LoraModel convs = LoraModel.builder()
                .conv2d("conv", kernel, kernelBias, new int[] {1, 1}, new int[] {1, 1}).build(); // [out, in, kh, kw]
        convs.applyLora(cfg, List.of("conv"));                  // a LoraConv2d with adapter "default", active
        INDArray c = convs.forward("conv", images);             // NCHW [n, in, h, w] -> [n, out, h', w']
        convs.merge();                                          // exact, as LoraLinear's
        convs.unmerge();
        // end
        assertArrayEquals(new long[] {3, 4}, e.shape());
        assertBitwiseEquals(table.getRows(3, 1, 4), e, "a fresh embedding adapter (A = 0) is the table");
        assertArrayEquals(new long[] {2, 5, 6, 6}, c.shape());
        assertTrue(convs.loraConvs().get("conv").activeAdapter().equals("default"));
    }

    @Test
    void severalAdapters() {
        LoraLinear layer = LoraLinear.wrap(gaussian(F, 11, 0.3, 8, 6), null, LoraConfig.builder().rank(2).build());
        layer.setAdapterWeights("default", gaussian(F, 12, 0.1, 2, 6), gaussian(F, 13, 0.1, 8, 2));
        INDArray x = gaussian(F, 14, 1, 4, 6);
        layer.eval();
        // docs/layers.md: several adapters
        layer.addAdapter("legal", LoraConfig.builder().rank(4).alpha(8).build());
        layer.setActiveAdapter("legal");                                     // forward, backward, merge use "legal"
        layer.addWeightedAdapter("mix", List.of("default", "legal"), new double[] {0.7, 0.3});      // exact (PEFT "cat")
        layer.addWeightedAdapterSvd("mix2", List.of("default", "legal"), new double[] {0.7, 0.3}, 2); // best rank-2
        INDArray y = layer.forward(x, new String[] {"default", "legal", LoraLinear.BASE_MODEL, null /* base */});
        // end
        layer.setActiveAdapter("default");
        INDArray y0 = layer.forward(x.getRow(0).reshape(1, 6));
        assertTrue(y0.equalsWithEps(y.getRow(0).reshape(1, 8), 1e-5), "row 0 uses adapter default");
        assertEquals(6, layer.adapter("mix").config().rank(), "cat concatenates the ranks");
    }

    @Test
    void trainTwoLayers() {
        INDArray w1 = gaussian(F, 20, 0.3, 8, 6);
        INDArray w2 = gaussian(F, 21, 0.3, 3, 8);
        INDArray w1Before = w1.dup();
        INDArray x = gaussian(F, 22, 1, 16, 6);
        INDArray target = gaussian(F, 23, 1, 16, 3);
        LoraConfig cfg = LoraConfig.builder().rank(2).alpha(4).build();
        LoraLinear layer1 = LoraLinear.wrap(w1, null, cfg.forModule("fc1"));
        LoraLinear layer2 = LoraLinear.wrap(w2, null, cfg.forModule("fc2"));
        int steps = 50;
        double before = layer2.forward(layer1.forward(x)).squaredDistance(target);
        // docs/training.md: loop
        LoraTrainer trainer = LoraTrainer.builder()
                .updater(new Adam(1e-2))        // any IUpdater; schedules see trainer.iteration() / trainer.epoch()
                .clipGradientNorm(1.0)          // optional: global L2 norm over all trained gradients
                .weightDecay(0.01)              // optional: decoupled, so Adam + weightDecay = AdamW
                .build(layer1, layer2);
        layer1.train(); layer2.train();         // dropout (LoraConfig.dropout) is on in training mode only
        for (int step = 0; step < steps; step++) {
            INDArray y = layer2.forward(layer1.forward(x));
            INDArray dLdy = y.sub(target).muli(2.0 / y.length());    // mean squared error
            layer1.backward(layer2.backward(dLdy), false);          // x is data: no dL/dx
            double gradNorm = trainer.step();   // update A and B, zero the gradients; the norm before clipping
        }
        trainer.nextEpoch();                    // for epoch-based schedules
        // end
        assertBitwiseEquals(w1Before, w1, "W of layer1 after training");
        assertEquals(steps, trainer.iteration());
        layer1.eval();
        layer2.eval();
        double after = layer2.forward(layer1.forward(x)).squaredDistance(target);
        assertTrue(after < 0.9 * before, "the loss falls: " + before + " -> " + after);
    }

    private LoraModel model(long seed) {
        return LoraModel.builder()
                .linear("model.layers.0.self_attn.q_proj", gaussian(F, seed, 0.3, 8, 8), null)
                .linear("model.layers.0.self_attn.v_proj", gaussian(F, seed + 1, 0.3, 8, 8), null)
                .build();
    }

    @Test
    void trainSaveResume() throws IOException {
        Path dir = tmp.resolve("ckpt");
        INDArray x = gaussian(F, 30, 1, 4, 8);
        LoraModel model = model(31);
        model.applyLora(LoraConfig.builder().rank(2).alpha(4).build(), List.of("q_proj", "v_proj"));
        model.train();
        // docs/training.md: model
        LoraTrainer trainer = LoraTrainer.builder().updater(new Adam(1e-3)).build(model); // every targeted linear
        // ... train; at a checkpoint:
        model.save(dir, "default");                               // the adapter (PEFT files)
        trainer.saveState(dir);                                   // trainer_state.safetensors + trainer_state.json

        // Later, in a new process: the same base weights, then
        LoraModel resumed = model(31);                            // built from the base weights, no LoRA yet
        resumed.load(dir, "default");
        LoraTrainer continued = LoraTrainer.loadState(dir, resumed);   // next step() continues the saved run
        // end
        assertEquals(trainer.iteration(), continued.iteration());
        assertEquals(List.of("model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj"),
                continued.layerNames());
        resumed.eval();
        model.eval();
        assertBitwiseEquals(model.forward("model.layers.0.self_attn.q_proj", x),
                resumed.forward("model.layers.0.self_attn.q_proj", x), "resumed model output");
    }

    @Test
    void peftFiles() throws IOException {
        Path dir = tmp.resolve("peft");
        Path dir2 = tmp.resolve("peft2");
        LoraConfig cfg = LoraConfig.builder().rank(2).alpha(4).build();
        LoraLinear q = LoraLinear.wrap(gaussian(F, 40, 0.3, 8, 6), null, cfg);
        LoraLinear v = LoraLinear.wrap(gaussian(F, 41, 0.3, 8, 6), null, cfg);
        q.setAdapterWeights("default", gaussian(F, 42, 0.1, 2, 6), gaussian(F, 43, 0.1, 8, 2));
        Map<String, LoraEmbedding> embs = Map.of("model.embed_tokens",
                LoraEmbedding.wrap(gaussian(F, 44, 1, 10, 6), cfg));
        INDArray w = gaussian(F, 45, 0.3, 3, 8);
        INDArray b = gaussian(F, 46, 0.1, 3);
        // docs/peft-files.md: files
        Map<String, LoraLinear> modules = Map.of(
                "model.layers.0.self_attn.q_proj", q,
                "model.layers.0.self_attn.v_proj", v);
        PeftAdapterFiles.save(dir, modules, "default");                     // F32; or DataType.BFLOAT16, HALF, DOUBLE
        PeftAdapterConfig loaded = PeftAdapterFiles.load(dir, modules, "sql"); // adds adapter "sql" to q and v
        q.setActiveAdapter("sql");
        PeftAdapter a = PeftAdapterFiles.read(dir);                          // everything in the files, no model needed
        PeftAdapterFiles.saver().linears(modules).embeddings(embs)          // embeddings, modules_to_save, names
                .modulesToSave(Map.of("score", Map.of("weight", w, "bias", b)))
                .baseModelNameOrPath("gpt2").save(dir2, "default");
        // end
        assertEquals(2, loaded.r());
        assertBitwiseEquals(q.loraA("default"), q.loraA("sql"), "loaded A");
        assertEquals(2, a.modules().size());
        PeftAdapter b2 = PeftAdapterFiles.read(dir2);
        assertEquals(List.of("score"), b2.fullModules());
        assertEquals("gpt2", b2.config().baseModelNameOrPath().orElseThrow());
    }

    @Test
    void aModel() throws IOException {
        Path dir = tmp.resolve("model");
        INDArray table = gaussian(F, 50, 1, 12, 8);
        INDArray wq = gaussian(F, 51, 0.3, 8, 8);
        INDArray wv = gaussian(F, 52, 0.3, 8, 8);
        INDArray wFc = gaussian(F, 53, 0.3, 8, 16);
        INDArray bFc = gaussian(F, 54, 0.1, 16);
        INDArray wHead = gaussian(F, 55, 0.3, 3, 16);
        INDArray bHead = gaussian(F, 56, 0.1, 3);
        INDArray trainedHead = gaussian(F, 57, 0.3, 3, 16);
        INDArray trainedBias = gaussian(F, 58, 0.1, 3);
        INDArray x = gaussian(F, 59, 1, 2, 8);
        INDArray tokenIds = Nd4j.createFromArray(new long[] {1, 5, 7});
        INDArray wqBefore = wq.dup();
        // docs/models.md: model
        LoraModel model = LoraModel.builder()
                .embedding("model.embed_tokens", table)                    // [num_embeddings, dim], referenced
                .linear("model.layers.0.self_attn.q_proj", wq, null)       // W [out, in], referenced
                .linear("model.layers.0.self_attn.v_proj", wv, null)
                .linearInOut("model.layers.0.mlp.fc", wFc, bFc)            // W [in, out] (DL4J, GPT-2 Conv1D), never copied
                .linear("score", wHead, bHead)
                .build();
        model.applyLora(LoraConfig.builder().rank(2).alpha(4).build(), List.of("q_proj", "v_proj"));
        System.out.println(model.trainableParametersReport());  // PEFT's print_trainable_parameters() line
        INDArray y = model.forward("model.layers.0.self_attn.q_proj", x);
        INDArray e = model.forward("model.embed_tokens", tokenIds);        // ids [...] -> [..., dim]
        model.setModuleToSave("score", trainedHead, trainedBias);          // PEFT's modules_to_save: a copy replaces the head
        model.setBaseModelNameOrPath("meta-llama/Llama-3.2-1B");
        model.save(dir, "default");                                        // PEFT adapter_model.safetensors + adapter_config.json
        Map<String, INDArray> copies = model.mergedWeightsCopy();          // W + s·B·A per module, new arrays; model untouched
        Map<String, INDArray> plain = model.mergeAndUnload();              // W += s·B·A in the caller's arrays; wrappers dropped
        // end
        assertTrue(model.trainableParametersReport().startsWith("trainable params: "));
        assertArrayEquals(new long[] {2, 8}, y.shape());
        assertArrayEquals(new long[] {3, 8}, e.shape());
        assertBitwiseEquals(wqBefore, copies.get("model.layers.0.self_attn.q_proj"), "B = 0: merged W is W");
        assertTrue(plain.get("model.layers.0.self_attn.q_proj") == wq, "mergeAndUnload works in the caller's array");
        assertTrue(PeftAdapterFiles.read(dir).config().targetModulesRegex().isEmpty());
        assertEquals(List.of("score"), PeftAdapterFiles.read(dir).fullModules());
    }
}
