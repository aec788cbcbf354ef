package io.github.lora4j.io;

import static io.github.lora4j.io.IoTestData.concat;
import static io.github.lora4j.io.IoTestData.f32;
import static io.github.lora4j.io.IoTestData.file;
import static io.github.lora4j.io.IoTestData.u16;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import io.github.lora4j.TestData;
import io.github.lora4j.io.PeftAdapterLayout.Kind;
import io.github.lora4j.model.LoraModel;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * Hand-written fixtures (bytes assembled in the test, not by lora4j's writer) for the config and tensor variants
 * found in published adapters: F16 tensors, a regex {@code target_modules}, a new PEFT config full of nulls, the
 * {@code modules_to_save} / {@code original_module} key forms, {@code rank_pattern} / {@code alpha_pattern}.
 */
class PeftVariantsTest {

    @TempDir
    Path tmp;

    /** lora_A [1, 2] and lora_B [2, 1] of module {@code m}, F32, values 1, 2 and 3, 4. */
    private static final String PAIR = "\"base_model.model.m.lora_A.weight\":{\"dtype\":\"F32\",\"shape\":[1,2],"
            + "\"data_offsets\":[0,8]},\"base_model.model.m.lora_B.weight\":{\"dtype\":\"F32\",\"shape\":[2,1],"
            + "\"data_offsets\":[8,16]}";

    private static LoraModel twoByTwo(String... paths) {
        LoraModel.Builder b = LoraModel.builder();
        long seed = 1;
        for (String p : paths) {
            b.linear(p, TestData.gaussian(DataType.FLOAT, seed++, 1, 2, 2), null);
        }
        return b.build();
    }

    @Test
    void f16TensorsLoadWithTheirExactValues() throws IOException {
        // 0x3C00 = 1, 0xC000 = -2, 0x3555 = 0.333251953125, 0x7BFF = 65504 (the largest half).
        String header = "{\"__metadata__\":{\"format\":\"pt\"},\"base_model.model.m.lora_A.weight\":{\"dtype\":\"F16\","
                + "\"shape\":[1,2],\"data_offsets\":[0,4]},\"base_model.model.m.lora_B.weight\":{\"dtype\":\"F16\","
                + "\"shape\":[2,1],\"data_offsets\":[4,8]}}";
        Path dir = IoTestData.writeDir(tmp.resolve("f16"), IoTestData.configJson(1).replace("q_proj", "m"),
                file(header, u16(0x3C00, 0xC000, 0x3555, 0x7BFF)));
        LoraModel model = twoByTwo("m");
        model.load(dir, "default");
        assertArrayEquals(new float[] {1f, -2f}, model.module("m").loraA("default").dup('c').data().asFloat());
        assertArrayEquals(new float[] {0.333251953125f, 65504f}, model.module("m").loraB("default").dup('c').data().asFloat());
    }

    @Test
    void aRegexTargetIsKeptAndWrittenBackAsOneString() throws IOException {
        Path dir = IoTestData.writeDir(tmp.resolve("regex"), "{\"peft_type\": \"LORA\", \"r\": 1, "
                + "\"target_modules\": \".*\\\\.m\"}", file("{" + PAIR.replace("model.m.", "model.layers.0.m.") + "}",
                f32(1, 2, 3, 4)));
        LoraModel model = twoByTwo("layers.0.m");
        PeftAdapterConfig c = model.load(dir, "default");
        assertEquals(Optional.of(".*\\.m"), c.targetModulesRegex());
        assertTrue(model.targetIsRegex());
        model.save(tmp.resolve("again"), "default");
        assertEquals(".*\\.m", new ObjectMapper().readTree(tmp.resolve("again").resolve(PeftAdapterFiles.CONFIG_FILE)
                .toFile()).get("target_modules").textValue());
    }

    @Test
    void aNewPeftConfigFullOfNullsReadsWithPeftsDefaults() throws IOException {
        // Keys as PEFT 0.17 writes them (null or false for every feature not used).
        String config = "{\"alora_invocation_tokens\": null, \"alpha_pattern\": {}, \"arrow_config\": null,"
                + " \"auto_mapping\": null, \"base_model_name_or_path\": null, \"bias\": \"none\", \"corda_config\": null,"
                + " \"ensure_weight_tying\": false, \"eva_config\": null, \"exclude_modules\": null,"
                + " \"fan_in_fan_out\": false, \"inference_mode\": true, \"init_lora_weights\": true,"
                + " \"layer_replication\": null, \"layers_pattern\": null, \"layers_to_transform\": null,"
                + " \"loftq_config\": {}, \"lora_alpha\": 32, \"lora_bias\": false, \"lora_dropout\": 0.05,"
                + " \"megatron_config\": null, \"megatron_core\": \"megatron.core\", \"modules_to_save\": null,"
                + " \"peft_type\": \"LORA\", \"peft_version\": \"0.17.1\", \"qalora_group_size\": 16, \"r\": 1,"
                + " \"rank_pattern\": {}, \"revision\": null, \"target_modules\": [\"m\"], \"target_parameters\": null,"
                + " \"task_type\": \"CAUSAL_LM\", \"trainable_token_indices\": null, \"use_dora\": false,"
                + " \"use_qalora\": false, \"use_rslora\": false}";
        PeftAdapterConfig c = PeftAdapterFiles.read(IoTestData.writeDir(tmp.resolve("new"), config,
                file("{" + PAIR + "}", f32(1, 2, 3, 4)))).config();
        assertEquals(32.0, c.loraAlpha());
        assertEquals(Optional.empty(), c.baseModelNameOrPath());
        assertEquals(List.of(), c.modulesToSave());
        assertEquals("0.17.1", c.raw().get("peft_version").textValue());
    }

    @Test
    void modulesToSaveKeysInEveryFormPeftWroteAreRead() throws IOException {
        // score.modules_to_save.weight (adapter name stripped), score.original_module.weight (a base copy), cls.bias.
        String header = "{" + PAIR + ",\"base_model.model.score.modules_to_save.weight\":{\"dtype\":\"F32\","
                + "\"shape\":[2,2],\"data_offsets\":[16,32]},\"base_model.model.score.original_module.weight\":"
                + "{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[32,48]},\"base_model.model.cls.bias\":"
                + "{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[48,56]}}";
        Path dir = IoTestData.writeDir(tmp.resolve("mts"), "{\"peft_type\": \"LORA\", \"r\": 1, \"task_type\": "
                + "\"SEQ_CLS\", \"modules_to_save\": [\"score\"]}",
                file(header, concat(f32(1, 2, 3, 4), f32(5, 6, 7, 8), f32(9, 9, 9, 9), f32(-1, -2))));
        PeftAdapter a = PeftAdapterFiles.read(dir);
        assertEquals(List.of("cls", "score"), a.fullModules());
        assertArrayEquals(new float[] {5, 6, 7, 8}, a.full("score").get("weight").dup('c').data().asFloat());
        assertEquals(List.of("score.original_module.weight"), List.copyOf(a.baseCopies().keySet()));

        LoraModel model = LoraModel.builder().linear("m", TestData.gaussian(DataType.FLOAT, 1, 1, 2, 2), null)
                .linear("score", TestData.gaussian(DataType.FLOAT, 2, 1, 2, 2), null)
                .linear("cls", TestData.gaussian(DataType.FLOAT, 3, 1, 2, 2), TestData.gaussian(DataType.FLOAT, 4, 1, 2))
                .build();
        INDArray clsWeight = model.module("cls").weight();
        model.load(dir, "default");
        assertEquals(List.of("score", "cls"), model.modulesToSave());
        assertArrayEquals(new float[] {5, 6, 7, 8}, model.module("score").weight().dup('c').data().asFloat());
        assertArrayEquals(new float[] {-1, -2}, model.module("cls").bias().dup('c').data().asFloat());
        TestData.assertBitwiseEquals(clsWeight, model.module("cls").weight(), "cls keeps its weight, only the bias is saved");

        // The map-based load cannot swap a caller's modules, so it refuses rather than drop the full tensors.
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> PeftAdapterFiles.load(dir,
                Map.of("m", model.module("m")), "other"));
        assertTrue(e.getMessage().contains("full tensors (modules_to_save or trained biases) for [cls, score]"),
                e.getMessage());
    }

    @Test
    void aTrainedBiasOfAnAdaptedLayerIsRefusedNamingTheModule() throws IOException {
        String header = "{" + PAIR + ",\"base_model.model.m.base_layer.bias\":{\"dtype\":\"F32\",\"shape\":[2],"
                + "\"data_offsets\":[16,24]}}";
        Path dir = IoTestData.writeDir(tmp.resolve("bias"), "{\"peft_type\": \"LORA\", \"r\": 1, \"bias\": \"lora_only\"}",
                file(header, concat(f32(1, 2, 3, 4), f32(5, 6))));
        AdapterFormatException e = assertThrows(AdapterFormatException.class, () -> PeftAdapterFiles.read(dir));
        assertTrue(e.getMessage().contains("module 'm' has both LoRA tensors and full tensors [bias]"), e.getMessage());
        // With bias "none" the same key is only a copy of the base bias, kept apart.
        Path none = IoTestData.writeDir(tmp.resolve("none"), "{\"peft_type\": \"LORA\", \"r\": 1}",
                file(header, concat(f32(1, 2, 3, 4), f32(5, 6))));
        assertEquals(List.of("m.base_layer.bias"), List.copyOf(PeftAdapterFiles.read(none).baseCopies().keySet()));
    }

    @Test
    void rankAndAlphaPatternsResolveAsPeftMatchesThem() throws IOException {
        // q: r = 2 through the full-path key; v: r = 1 (default) but alpha 5 through a regex key.
        String header = "{\"base_model.model.layers.0.q.lora_A.weight\":{\"dtype\":\"F32\",\"shape\":[2,2],"
                + "\"data_offsets\":[0,16]},\"base_model.model.layers.0.q.lora_B.weight\":{\"dtype\":\"F32\","
                + "\"shape\":[2,2],\"data_offsets\":[16,32]},\"base_model.model.layers.0.v.lora_A.weight\":"
                + "{\"dtype\":\"F32\",\"shape\":[1,2],\"data_offsets\":[32,40]},\"base_model.model.layers.0.v.lora_B."
                + "weight\":{\"dtype\":\"F32\",\"shape\":[2,1],\"data_offsets\":[40,48]}}";
        Path dir = IoTestData.writeDir(tmp.resolve("pattern"), "{\"peft_type\": \"LORA\", \"r\": 1, \"lora_alpha\": 2,"
                + " \"rank_pattern\": {\"layers.0.q\": 2}, \"alpha_pattern\": {\"layers\\\\.\\\\d+\\\\.v\": 5}}",
                file(header, concat(f32(1, 2, 3, 4), f32(5, 6, 7, 8), f32(1, 1), f32(2, 2))));
        PeftAdapter a = PeftAdapterFiles.read(dir);
        assertEquals(2, a.rank("layers.0.q"));
        assertEquals(2.0, a.alpha("layers.0.q"));
        assertEquals(1, a.rank("layers.0.v"));
        assertEquals(5.0, a.alpha("layers.0.v"));
        assertEquals(Kind.LINEAR, a.kind("layers.0.v"));
        LoraModel model = twoByTwo("layers.0.q", "layers.0.v");
        model.load(dir, "default");
        assertEquals(1.0, model.module("layers.0.q").adapter("default").scaling());
        assertEquals(5.0, model.module("layers.0.v").adapter("default").scaling());
        model.save(tmp.resolve("again"), "default");
        PeftAdapter again = PeftAdapterFiles.read(tmp.resolve("again"));
        for (String m : List.of("layers.0.q", "layers.0.v")) {
            assertEquals(a.rank(m), again.rank(m), m);
            assertEquals(a.alpha(m), again.alpha(m), m);
        }
        assertTrue(Files.exists(tmp.resolve("again").resolve(PeftAdapterFiles.MODEL_FILE)));
    }
}
