package io.github.lora4j.io;

import static io.github.lora4j.io.IoTestData.Q;
import static io.github.lora4j.io.IoTestData.V;
import static io.github.lora4j.TestData.assertBitwiseEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraInit;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.WeightLayout;
import java.io.IOException;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/** What save writes for PEFT to read, and the contracts of the public types. */
class PeftAdapterFilesTest {

    @TempDir
    Path tmp;

    @Test
    void savedConfigHasPeftsKeysAndTypes() throws IOException {
        Map<String, LoraLinear> model = new LinkedHashMap<>();
        LoraConfig cfg = LoraConfig.builder().rank(2).alpha(16).dropout(0.05).rsLora(true).build();
        model.put("transformer.h.0.attn.c_attn", IoTestData.layer(DataType.FLOAT, 1, 6, 18, cfg, WeightLayout.IN_OUT));
        model.put("transformer.h.1.attn.c_attn", IoTestData.layer(DataType.FLOAT, 2, 6, 18, cfg, WeightLayout.IN_OUT));
        model.put("transformer.h.1.mlp.c_fc", IoTestData.layer(DataType.FLOAT, 3, 6, 24, cfg, WeightLayout.IN_OUT));
        Path dir = tmp.resolve("nested/dirs/are/created");
        PeftAdapterFiles.save(dir, model, "default");

        JsonNode c = new ObjectMapper().readTree(dir.resolve(PeftAdapterFiles.CONFIG_FILE).toFile());
        assertEquals("LORA", c.get("peft_type").textValue());
        assertTrue(c.get("r").isInt());
        assertEquals(2, c.get("r").intValue());
        assertTrue(c.get("lora_alpha").isIntegralNumber(), "PEFT declares lora_alpha an int: " + c.get("lora_alpha"));
        assertEquals(16, c.get("lora_alpha").intValue());
        assertEquals(0.05, c.get("lora_dropout").doubleValue());
        assertEquals("[\"c_attn\",\"c_fc\"]", c.get("target_modules").toString());
        assertTrue(c.get("use_rslora").booleanValue());
        assertTrue(c.get("fan_in_fan_out").booleanValue(), "IN_OUT layers are PEFT's fan_in_fan_out");
        assertEquals("none", c.get("bias").textValue());
        assertTrue(c.get("task_type").isNull());

        PeftAdapter a = PeftAdapterFiles.read(dir);
        assertEquals(List.of("transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn", "transformer.h.1.mlp.c_fc"),
                a.modules());
        assertEquals(cfg.toBuilder().init(LoraInit.ZERO).build(), a.config().toLoraConfig());
    }

    @Test
    void nonIntegralAlphaIsWrittenAsANumber() throws IOException {
        LoraConfig cfg = LoraConfig.builder().rank(2).alpha(2.5).build();
        PeftAdapterConfig c = PeftAdapterConfig.from(cfg, List.of("q_proj"), false);
        assertEquals(2.5, new ObjectMapper().readTree(c.toJson()).get("lora_alpha").doubleValue());
        assertEquals(c, PeftAdapterConfig.parse(c.toJson(), "x"));
    }

    @Test
    void modulesWithoutTheAdapterAreSkipped() throws IOException {
        Map<String, LoraLinear> model = IoTestData.model(DataType.FLOAT, 3);
        model.get(V).deleteAdapter("default");
        PeftAdapterFiles.save(tmp, model, "default");
        assertEquals(List.of(Q), PeftAdapterFiles.read(tmp).modules());
        assertEquals(List.of("q_proj"), PeftAdapterFiles.read(tmp).config().targetModules());
    }

    @Test
    void peftAdapterHandsOutCopies() throws IOException {
        Map<String, LoraLinear> model = IoTestData.model(DataType.FLOAT, 3);
        PeftAdapterFiles.save(tmp, model, "default");
        PeftAdapter a = PeftAdapterFiles.read(tmp);
        INDArray first = a.a(Q);
        first.addi(1);
        assertBitwiseEquals(model.get(Q).loraA("default"), a.a(Q), "A after the caller changed its copy");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> a.b("nope"));
        assertTrue(e.getMessage().contains("module 'nope' is not in the adapter; expected one of [" + Q + ", " + V + "]"),
                e.getMessage());
    }

    @Test
    void loadAddsButDoesNotActivateAndLeavesOtherModulesAlone() throws IOException {
        PeftAdapterFiles.save(tmp, IoTestData.model(DataType.DOUBLE, 3), "default");
        Map<String, LoraLinear> model = IoTestData.model(DataType.FLOAT, 9); // FLOAT layers, F32 file
        LoraLinear extra = IoTestData.layer(DataType.FLOAT, 1, 4, 4, LoraConfig.defaults().toBuilder().rank(2).build(),
                WeightLayout.OUT_IN);
        model.put("lm_head", extra);
        PeftAdapterFiles.load(tmp, model, "sql");
        assertEquals(List.of("default", "sql"), model.get(Q).adapterNames());
        assertEquals("default", model.get(Q).activeAdapter());
        assertEquals(List.of("default"), extra.adapterNames());
        assertFalse(model.get(V).adapter("sql").config().rsLora());
    }

    @Test
    void loadRejectsInvalidNamesBeforeReading() {
        for (String name : new String[] {"", " ", LoraLinear.BASE_MODEL}) {
            assertThrows(IllegalArgumentException.class,
                    () -> PeftAdapterFiles.load(tmp.resolve("does-not-exist"), IoTestData.bareModel(DataType.FLOAT), name));
        }
    }
}
