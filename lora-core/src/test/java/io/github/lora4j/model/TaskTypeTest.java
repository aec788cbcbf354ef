package io.github.lora4j.model;

import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.github.lora4j.LoraConfig;
import io.github.lora4j.io.AdapterFormatException;
import io.github.lora4j.io.PeftAdapterConfig;
import io.github.lora4j.io.PeftAdapterFiles;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;

/**
 * PEFT's {@code task_type} (issue 30: always written as null, so PEFT's {@code AutoPeftModelFor…} classes refused the
 * folder): set with {@link LoraModel#setTaskType}, kept when read, written.
 */
class TaskTypeTest {

    @TempDir
    Path tmp;

    private static LoraModel base() {
        return LoraModel.builder()
                .linear("layers.0.q_proj", gaussian(DataType.FLOAT, 1, 0.5, 6, 6), null)
                .linear("layers.0.v_proj", gaussian(DataType.FLOAT, 2, 0.5, 6, 6), null)
                .build();
    }

    private static JsonNode config(Path dir) throws IOException {
        return new ObjectMapper().readTree(Files.readAllBytes(dir.resolve(PeftAdapterFiles.CONFIG_FILE)));
    }

    @Test
    void aTaskTypeIsWrittenReadBackAndKeptThroughASecondSave() throws IOException {
        // docs/peft-parity.md: task-type
        LoraModel model = base().applyLora(LoraConfig.builder().rank(4).build(), List.of("q_proj", "v_proj"));
        model.setTaskType("CAUSAL_LM");                  // PEFT's AutoPeftModelForCausalLM needs it
        model.save(tmp.resolve("adapter"), "default");

        LoraModel fresh = base();
        PeftAdapterConfig read = fresh.load(tmp.resolve("adapter"), "default");
        String taskType = fresh.taskType();              // "CAUSAL_LM", kept for the next save
        // end
        assertEquals("CAUSAL_LM", config(tmp.resolve("adapter")).get("task_type").textValue());
        assertEquals("CAUSAL_LM", read.taskType().orElseThrow());
        assertEquals("CAUSAL_LM", taskType);
        fresh.save(tmp.resolve("again"), "default");
        assertEquals("CAUSAL_LM", config(tmp.resolve("again")).get("task_type").textValue());
    }

    @Test
    void everyPeftTaskTypeRoundTripsAndNoneIsWrittenAsNull() throws IOException {
        for (String task : PeftAdapterConfig.TASK_TYPES) {
            LoraModel model = base().applyLora(LoraConfig.builder().rank(2).build(), List.of("q_proj"));
            model.setTaskType(task);
            model.save(tmp.resolve(task), "default");
            LoraModel fresh = base();
            fresh.load(tmp.resolve(task), "default");
            assertEquals(task, fresh.taskType());
        }
        LoraModel none = base().applyLora(LoraConfig.builder().rank(2).build(), List.of("q_proj"));
        assertNull(none.taskType());
        none.save(tmp.resolve("none"), "default");
        assertTrue(config(tmp.resolve("none")).get("task_type").isNull(), "no task: null, as PEFT's default");
        assertEquals(List.of("SEQ_CLS", "SEQ_2_SEQ_LM", "CAUSAL_LM", "TOKEN_CLS", "QUESTION_ANS", "FEATURE_EXTRACTION"),
                PeftAdapterConfig.TASK_TYPES, "PEFT's TaskType enum (peft/utils/peft_types.py)");
    }

    @Test
    void aTypoIsRefusedNamingPeftsValuesAndTheModelKeepsItsTaskType() {
        LoraModel model = base().setTaskType("SEQ_CLS");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> model.setTaskType("CASUAL_LM"));
        assertTrue(e.getMessage().contains("expected null or one of PEFT's TaskType values [SEQ_CLS, SEQ_2_SEQ_LM, "
                + "CAUSAL_LM") && e.getMessage().contains("got 'CASUAL_LM'"), e.getMessage());
        assertEquals("SEQ_CLS", model.taskType());
        assertThrows(IllegalArgumentException.class, () -> model.setTaskType("causal_lm"), "PEFT's values are upper case");
        model.setTaskType(null);
        assertNull(model.taskType());
    }

    @Test
    void aTaskTypeLora4jDoesNotKnowIsKeptAsReadAndSavedBackUnchanged() throws IOException {
        LoraModel model = base().applyLora(LoraConfig.builder().rank(2).build(), List.of("q_proj"));
        model.save(tmp.resolve("a"), "default");
        Path file = tmp.resolve("a").resolve(PeftAdapterFiles.CONFIG_FILE);
        ObjectNode json = (ObjectNode) config(tmp.resolve("a"));
        json.put("task_type", "SOME_FUTURE_TASK");
        Files.write(file, new ObjectMapper().writeValueAsBytes(json));

        LoraModel fresh = base();
        fresh.load(tmp.resolve("a"), "default");
        assertEquals("SOME_FUTURE_TASK", fresh.taskType());
        fresh.save(tmp.resolve("b"), "default");
        assertEquals("SOME_FUTURE_TASK", config(tmp.resolve("b")).get("task_type").textValue());
    }

    @Test
    void aTaskTypeThatIsNotAStringIsRefusedByName() throws IOException {
        LoraModel model = base().applyLora(LoraConfig.builder().rank(2).build(), List.of("q_proj"));
        model.save(tmp, "default");
        ObjectNode json = (ObjectNode) config(tmp);
        json.putArray("task_type").add("CAUSAL_LM");
        Files.write(tmp.resolve(PeftAdapterFiles.CONFIG_FILE), new ObjectMapper().writeValueAsBytes(json));
        LoraModel fresh = base();
        AdapterFormatException e = assertThrows(AdapterFormatException.class, () -> fresh.load(tmp, "default"));
        assertTrue(e.getMessage().contains("expected task_type to be a string (one of PEFT's [SEQ_CLS")
                && e.getMessage().contains("or null, got ARRAY"), e.getMessage());
        assertTrue(fresh.loraModules().isEmpty(), "nothing loaded");
        assertNull(fresh.taskType());
    }

    @Test
    void theRealTrlAdapterCarriesCausalLm() throws Exception {
        Path dir = Path.of(TaskTypeTest.class.getResource("/real-adapters/gpt2-conv1d-trl-kto-peft0.8.2").toURI());
        assertEquals("CAUSAL_LM", PeftAdapterFiles.read(dir).config().taskType().orElseThrow());
    }
}
