package io.github.lora4j.io;

import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraEmbedding;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.WeightLayout;
import io.github.lora4j.model.LoraModel;
import io.github.lora4j.samediff.LoraSameDiff;
import io.github.lora4j.samediff.LoraSameDiffModel;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.linalg.api.buffer.DataType;

/**
 * Issue 29, item 5: save wrote module paths that read refuses ({@code x..y}, {@code x.}, {@code .x}, {@code lora_A},
 * {@code q.lora_B}, {@code modules_to_save}), so the adapter could not be read back. One rule ({@link ModulePaths})
 * now serves both: a path read would refuse is refused by save, naming it, before anything is written, whatever host
 * named the module (a map of layers, {@code LoraModel}, a SameDiff weight).
 */
class ModulePathRuleTest {

    @TempDir
    Path tmp;

    private static final LoraConfig CFG = LoraConfig.builder().rank(2).alpha(4).build();

    private static LoraLinear layer(long seed) {
        return IoTestData.layer(DataType.FLOAT, seed, 4, 3, CFG, WeightLayout.OUT_IN);
    }

    private static void assertRefusedBeforeWriting(Path dir, String path, IoCall save) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, save::run);
        assertTrue(e.getMessage().contains("'" + path + "'"), "names the path: " + e.getMessage());
        assertTrue(e.getMessage().contains("Nothing was written"), e.getMessage());
        assertFalse(Files.exists(dir), "nothing written, not even the directory");
    }

    @FunctionalInterface
    interface IoCall {
        void run() throws IOException;
    }

    @ParameterizedTest
    @ValueSource(strings = {"x..y", "x.", ".x", "lora_A", "q.lora_B", "modules_to_save", "a.lora_embedding_A",
        "h.base_layer", "a. .b", "a.original_module.b", "lora_magnitude_vector"})
    void aLinearPathReadWouldRefuseIsRefusedBySaveBeforeAnythingIsWritten(String path) {
        Path dir = tmp.resolve("out");
        Map<String, LoraLinear> modules = new LinkedHashMap<>();
        modules.put("fine.q", layer(1));
        modules.put(path, layer(5));
        assertRefusedBeforeWriting(dir, path, () -> PeftAdapterFiles.save(dir, modules, "default"));
    }

    @Test
    void embeddingAndModulesToSavePathsFollowTheSameRule() {
        Path dir = tmp.resolve("out");
        LoraEmbedding emb = LoraEmbedding.wrap(gaussian(DataType.FLOAT, 3, 0.5, 6, 4), CFG);
        assertRefusedBeforeWriting(dir, "emb.", () -> PeftAdapterFiles.saver().embeddings(Map.of("emb.", emb))
                .save(dir, "default"));
        assertRefusedBeforeWriting(dir, "score..out", () -> PeftAdapterFiles.saver().linears(Map.of("q", layer(1)))
                .modulesToSave(Map.of("score..out", Map.of("weight", gaussian(DataType.FLOAT, 4, 0.5, 2, 3))))
                .save(dir, "default"));
    }

    @Test
    void aPathWithAnUnpairedSurrogateIsRefused() {
        Path dir = tmp.resolve("out");
        String path = "q\uD800x";
        assertRefusedBeforeWriting(dir, path, () -> PeftAdapterFiles.save(dir, Map.of(path, layer(1)), "default"));
    }

    @Test
    void theReaderRefusesTheSamePathsAFileHolds() throws IOException {
        for (String path : List.of("x..y", "x.", "q.lora_B", "a. .b")) {
            String header = "{\"base_model.model." + path + ".lora_A.weight\":{\"dtype\":\"F32\",\"shape\":[2,4],"
                    + "\"data_offsets\":[0,32]},\"base_model.model." + path + ".lora_B.weight\":{\"dtype\":\"F32\","
                    + "\"shape\":[3,2],\"data_offsets\":[32,56]}}";
            Path dir = IoTestData.writeDir(tmp.resolve("read" + path.hashCode()), IoTestData.configJson(2),
                    IoTestData.file(header, new byte[56]));
            AdapterFormatException e = assertThrows(AdapterFormatException.class, () -> PeftAdapterFiles.read(dir));
            assertTrue(e.getMessage().contains("its module path"), e.getMessage());
        }
    }

    @Test
    void aLoraModelWithSuchAModuleIsRefusedBySave() {
        LoraModel model = LoraModel.builder()
                .linear("enc..q", gaussian(DataType.FLOAT, 1, 0.5, 3, 4), null)
                .linear("dec.q", gaussian(DataType.FLOAT, 2, 0.5, 3, 4), null)
                .build().applyLora(CFG, List.of("q"));
        Path dir = tmp.resolve("model");
        assertRefusedBeforeWriting(dir, "enc..q", () -> model.save(dir, "default"));
    }

    @Test
    void aSameDiffWeightNamedLikeARoleIsRefusedBySave() {
        SameDiff sd = SameDiff.create();
        SDVariable x = sd.placeHolder("x", DataType.FLOAT, -1, 4);
        SDVariable w = sd.var("layer.lora_B", gaussian(DataType.FLOAT, 7, 0.5, 4, 3));
        sd.mmul("y", x, w);
        LoraSameDiffModel model = LoraSameDiff.apply(sd, CFG, "layer.lora_B");
        Path dir = tmp.resolve("sd");
        assertRefusedBeforeWriting(dir, "layer.lora_B", () -> model.save(dir));
    }

    @Test
    void aPathWithRegexOperatorsKeepsItsOwnRankThroughAnEscapedPatternKey() throws IOException {
        // DL4J and SameDiff names may hold brackets; rank_pattern keys are regexes in PEFT and here.
        Map<String, LoraLinear> modules = new LinkedHashMap<>();
        modules.put("layers[0](a)", IoTestData.layer(DataType.FLOAT, 1, 6, 5, LoraConfig.builder().rank(1).alpha(3).build(),
                WeightLayout.OUT_IN));
        modules.put("b", layer(2));
        modules.put("c", layer(3));
        PeftAdapterFiles.save(tmp, modules, "default");
        PeftAdapter back = PeftAdapterFiles.read(tmp);
        assertEquals(1, back.layout().loraModules().get("layers[0](a)").rank());
        assertEquals(3.0, back.layout().loraModules().get("layers[0](a)").alpha());
        assertEquals(2, back.layout().loraModules().get("b").rank());
        assertEquals(Map.of("layers\\[0\\]\\(a\\)", 1), back.config().rankPattern());
    }

    /**
     * The law behind the rule: whatever path save accepts, read gives back as the same module; save refuses the
     * rest with an {@link IllegalArgumentException} and writes nothing.
     */
    @Property(tries = 200)
    void everyPathSaveAcceptsReadsBackAsTheSameModule(@ForAll("paths") String path) throws IOException {
        Path dir = Files.createTempDirectory("lora4j-paths").resolve("out");
        try {
            try {
                PeftAdapterFiles.save(dir, Map.of(path, layer(9)), "default");
            } catch (IllegalArgumentException refused) {
                assertFalse(Files.exists(dir), "a refused save writes nothing");
                assertTrue(ModulePaths.problem(path) != null, "refused only by the rule: " + refused.getMessage());
                return;
            }
            assertEquals(List.of(path), PeftAdapterFiles.read(dir).modules());
        } finally {
            if (Files.exists(dir.getParent())) {
                IoTestData.deleteTree(dir.getParent());
            }
        }
    }

    @Provide
    Arbitrary<String> paths() {
        Arbitrary<String> segment = Arbitraries.oneOf(
                Arbitraries.of("", " ", "q", "lora_A", "lora_B", "lora_embedding_B", "modules_to_save", "base_layer",
                        "weight", "bias", "0", "h", "[1]", "a(b", "x y", "ü", "\uD83D\uDE00", "\uD800"),
                Arbitraries.strings().withChars("ab._( *").ofMinLength(0).ofMaxLength(4));
        return segment.list().ofMinSize(1).ofMaxSize(4).map(l -> String.join(".", l));
    }
}
