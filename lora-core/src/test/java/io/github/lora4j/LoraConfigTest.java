package io.github.lora4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

class LoraConfigTest {

    @Test
    void defaultsMatchPeft() {
        LoraConfig c = LoraConfig.defaults();
        assertEquals(8, c.rank());
        assertEquals(8.0, c.alpha());
        assertEquals(0.0, c.dropout());
        assertEquals(false, c.rsLora());
        assertEquals(LoraInit.KAIMING_UNIFORM, c.init());
        assertEquals(1.0, c.scaling());
        assertEquals(c, LoraConfig.builder().build());
    }

    @Test
    void scalingIsAlphaOverRankOrOverSqrtRankWithRsLora() {
        assertEquals(2.0, LoraConfig.builder().rank(16).alpha(32).build().scaling());
        assertEquals(8.0, LoraConfig.builder().rank(16).alpha(32).rsLora(true).build().scaling());
    }

    @Test
    void toBuilderRoundTripsAndDerivesVariants() {
        LoraConfig c = LoraConfig.builder().rank(4).alpha(3).dropout(0.25).rsLora(true).init(LoraInit.GAUSSIAN).seed(7).build();
        assertEquals(c, c.toBuilder().build());
        assertEquals(c.hashCode(), c.toBuilder().build().hashCode());
        assertNotEquals(c, c.toBuilder().seed(8).build());
    }

    @Test
    void invalidValuesNameFieldValueAndRange() {
        assertMessage(() -> LoraConfig.builder().rank(0), "rank must be >= 1, got 0");
        assertMessage(() -> LoraConfig.builder().alpha(0), "alpha must be finite and > 0, got 0.0");
        assertMessage(() -> LoraConfig.builder().alpha(Double.NaN), "alpha must be finite and > 0, got NaN");
        assertMessage(() -> LoraConfig.builder().alpha(Double.POSITIVE_INFINITY), "alpha must be finite and > 0, got Infinity");
        assertMessage(() -> LoraConfig.builder().dropout(1.0), "dropout must be in [0, 1), got 1.0");
        assertMessage(() -> LoraConfig.builder().dropout(-0.1), "dropout must be in [0, 1), got -0.1");
        assertMessage(() -> LoraConfig.builder().dropout(Double.NaN), "dropout must be in [0, 1), got NaN");
        assertThrows(NullPointerException.class, () -> LoraConfig.builder().init(null));
    }

    private static void assertMessage(org.junit.jupiter.api.function.Executable e, String message) {
        IllegalArgumentException ex = assertThrows(IllegalArgumentException.class, e);
        assertEquals(message, ex.getMessage());
        assertTrue(ex.getMessage().contains("got"));
    }
}
