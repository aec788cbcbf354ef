package io.github.lora4j.benchmarks;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotSame;

import io.github.lora4j.LoraLinear;
import io.github.lora4j.MergeMode;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.ndarray.INDArray;

/** The side-by-side grid's arrays, which {@code SideBySide} and the probes that re-measure a cell share. */
class FixturesTest {

    @Test
    void aGridCellIsTheSameArraysEveryTimeAndEachLayerOwnsItsW() {
        Fixtures.GridCell cell = Fixtures.gridCell(64, 8, 4);
        Fixtures.GridCell again = Fixtures.gridCell(64, 8, 4);
        assertEquals(64 * 1000L + 8 * 10L + 4, cell.seed());
        assertEquals(cell.x(), again.x(), "x from the seed");
        assertEquals(cell.bias(), again.bias(), "bias from the seed");
        assertEquals(cell.g(), again.g(), "g from the seed");
        assertEquals(java.util.List.of(4L, 64L), java.util.List.of(cell.x().size(0), cell.x().size(1)));

        LoraLinear merged = cell.layer();
        LoraLinear unmerged = cell.layer();
        LoraLinear plain = cell.plain();
        INDArray w = plain.weight().dup();
        assertNotSame(merged.weight(), unmerged.weight());
        assertEquals(w, unmerged.weight(), "the same W in every layer of the cell");
        merged.merge(MergeMode.FAST);
        assertEquals(w, unmerged.weight(), "merging one layer of a cell leaves the others' W as it was");
        assertEquals(w, plain.weight());

        double update = merged.weight().sub(w).norm2Number().doubleValue() / w.norm2Number().doubleValue();
        assertEquals(Fixtures.RELATIVE_UPDATE, update, 1e-4, "‖s·B·A‖ / ‖W‖ of the cell's adapter");
    }
}
