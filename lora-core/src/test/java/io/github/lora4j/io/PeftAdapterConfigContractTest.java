package io.github.lora4j.io;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import io.github.lora4j.LoraConfig;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.function.Consumer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;

/** {@link PeftAdapterConfig}'s contracts on a null module path and on {@link PeftAdapterConfig#raw()}. */
class PeftAdapterConfigContractTest {

    private static final String PATTERNED = "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8,"
            + " \"rank_pattern\": {\"q_proj\": 2}, \"alpha_pattern\": {\"v_proj\": 3}}";

    @TempDir
    Path tmp;

    private static void refusesNull(Consumer<String> lookup, String what) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> lookup.accept(null), what);
        assertTrue(e.getMessage().contains("expected a module path") && e.getMessage().contains("got null"),
                what + ": expected a message naming expected and actual, got: " + e.getMessage());
    }

    @Test
    void aNullModuleIsRefusedWithIllegalArgumentExceptionWithOrWithoutPatterns() throws AdapterFormatException {
        PeftAdapterConfig patterned = PeftAdapterConfig.parse(PATTERNED.getBytes(StandardCharsets.UTF_8), "x");
        PeftAdapterConfig plain = PeftAdapterConfig.from(LoraConfig.builder().rank(4).build(), List.of("q_proj"), false);
        for (PeftAdapterConfig c : List.of(patterned, plain)) {
            refusesNull(c::rankOf, "rankOf " + c);
            refusesNull(c::alphaOf, "alphaOf " + c);
            refusesNull(c::toLoraConfig, "toLoraConfig " + c);
        }
        // The patterns still resolve real paths as before.
        assertEquals(2, patterned.rankOf("model.layers.0.q_proj"));
        assertEquals(4, patterned.rankOf("model.layers.0.v_proj"));
        assertEquals(3.0, patterned.alphaOf("model.layers.0.v_proj"));
        assertEquals(8.0, patterned.alphaOf("model.layers.0.q_proj"));
    }

    @Test
    void rawOfABuiltConfigIsTheObjectASaveWrites() throws IOException {
        LoraConfig cfg = LoraConfig.builder().rank(3).alpha(12).dropout(0.1).rsLora(true).build();
        PeftAdapterConfig c = PeftAdapterConfig.from(cfg, List.of("q_proj", "v_proj"), true);
        JsonNode raw = c.raw();
        assertEquals(PeftAdapterConfig.JSON.readTree(c.toJson()), raw, "raw() is what toJson writes");
        assertEquals("LORA", raw.get("peft_type").textValue());
        assertEquals(3, raw.get("r").intValue());
        assertEquals(12, raw.get("lora_alpha").intValue());
        assertEquals(0.1, raw.get("lora_dropout").doubleValue());
        assertEquals(List.of("q_proj", "v_proj"), List.of(raw.get("target_modules").get(0).textValue(),
                raw.get("target_modules").get(1).textValue()));
        assertTrue(raw.get("use_rslora").booleanValue());
        assertTrue(raw.get("fan_in_fan_out").booleanValue());
        assertEquals("none", raw.get("bias").textValue());
        // It reads back as the same config.
        assertEquals(c, PeftAdapterConfig.parse(PeftAdapterConfig.JSON.writeValueAsBytes(raw), "raw"));
    }

    @Test
    void rawOfAReadConfigIsTheFileAsReadUnknownKeysIncluded() throws IOException {
        PeftAdapterFiles.save(tmp, IoTestData.model(DataType.FLOAT, 1), "default");
        Path config = tmp.resolve(PeftAdapterFiles.CONFIG_FILE);
        JsonNode written = PeftAdapterConfig.JSON.readTree(Files.readAllBytes(config));
        assertEquals(written, PeftAdapterFiles.read(tmp).config().raw(), "a saved file reads back as written");

        Files.writeString(config, IoTestData.configJson(4).replace("{", "{\"peft_version\": \"0.17.1\", "));
        JsonNode raw = PeftAdapterFiles.read(tmp, layout -> { }).config().raw();
        assertEquals("0.17.1", raw.get("peft_version").textValue());
        assertEquals(PeftAdapterConfig.JSON.readTree(Files.readAllBytes(config)), raw);
    }

    @Test
    void rawIsACopy() {
        PeftAdapterConfig c = PeftAdapterConfig.from(LoraConfig.builder().rank(2).build(), List.of("q_proj"), false);
        ((com.fasterxml.jackson.databind.node.ObjectNode) c.raw()).put("r", 99);
        assertEquals(2, c.raw().get("r").intValue());
    }
}
