package io.github.lora4j.benchmarks.report;

import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.knowm.xchart.BitmapEncoder;
import org.knowm.xchart.VectorGraphicsEncoder;
import org.knowm.xchart.XYChart;
import org.knowm.xchart.XYChartBuilder;
import org.knowm.xchart.XYSeries;
import org.knowm.xchart.style.markers.SeriesMarkers;

/**
 * XChart line chart of the unmerged/merged forward time ratio against batch size (log scale), one series per
 * rank × size, with the 1.05 target as a dashed line. Written as SVG and PNG.
 */
public final class OverheadChart {

    private OverheadChart() {
    }

    /** The chart, or null when the data hold no pair of merged and unmerged forward times. */
    public static XYChart build(ReportData data) {
        XYChart chart = new XYChartBuilder().width(800).height(500)
                .title("LoRA unmerged / merged forward time vs batch size")
                .xAxisTitle("batch size n (rows)").yAxisTitle("unmerged / merged (median)").build();
        chart.getStyler().setXAxisLogarithmic(true);
        chart.getStyler().setLegendPosition(org.knowm.xchart.style.Styler.LegendPosition.InsideNE);
        String f = MarkdownReport.FORWARD;
        double minN = Double.MAX_VALUE;
        double maxN = 0;
        int series = 0;
        for (int rank : data.values(f + ".unmerged", "rank")) {
            for (int size : data.values(f + ".unmerged", "size")) {
                List<Double> xs = new ArrayList<>();
                List<Double> ys = new ArrayList<>();
                for (int n : data.values(f + ".unmerged", "batch")) {
                    String sz = String.valueOf(size);
                    String b = String.valueOf(n);
                    double ratio = data.median(f + ".unmerged", "size", sz, "rank", String.valueOf(rank), "batch", b)
                            / data.median(f + ".merged", "size", sz, "batch", b);
                    if (!Double.isNaN(ratio)) {
                        xs.add((double) n);
                        ys.add(ratio);
                        minN = Math.min(minN, n);
                        maxN = Math.max(maxN, n);
                    }
                }
                if (!xs.isEmpty()) {
                    chart.addSeries("r = " + rank + ", in = out = " + size, xs, ys).setMarker(SeriesMarkers.CIRCLE);
                    series++;
                }
            }
        }
        if (series == 0) {
            return null;
        }
        XYSeries target = chart.addSeries("target 1.05 (4096, r = 8)", new double[] {minN, maxN},
                new double[] {Targets.UNMERGED_OVER_MERGED_4096, Targets.UNMERGED_OVER_MERGED_4096});
        target.setMarker(SeriesMarkers.NONE);
        target.setLineStyle(org.knowm.xchart.style.lines.SeriesLines.DASH_DASH);
        return chart;
    }

    /**
     * Writes {@code <base>.svg} and {@code <base>.png} in {@code dir}.
     *
     * @return the files written; empty when there was nothing to chart
     */
    public static List<Path> write(ReportData data, Path dir, String base) throws IOException {
        XYChart chart = build(data);
        if (chart == null) {
            return List.of();
        }
        Path svg = dir.resolve(base + ".svg");
        Path png = dir.resolve(base + ".png");
        VectorGraphicsEncoder.saveVectorGraphic(chart, svg.toString(), VectorGraphicsEncoder.VectorGraphicsFormat.SVG);
        BitmapEncoder.saveBitmap(chart, png.toString(), BitmapEncoder.BitmapFormat.PNG);
        return List.of(svg, png);
    }
}
