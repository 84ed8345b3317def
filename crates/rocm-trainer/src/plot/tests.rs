use super::*;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rocm-plot-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The decoded RGB pixels of a PNG.
fn read(path: &Path) -> RgbImage {
    let decoder = png::Decoder::new(io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut rgb = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut rgb).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb, "{}", path.display());
    RgbImage {
        width: info.width as usize,
        height: info.height as usize,
        rgb,
    }
}

/// Pixels in rows `rows` × columns `cols` within `tol` of `c` in every channel.
fn count(image: &RgbImage, rows: Range<usize>, cols: Range<usize>, c: [u8; 3], tol: u8) -> usize {
    rows.flat_map(|y| cols.clone().map(move |x| (x, y)))
        .filter(|&(x, y)| {
            let i = (y * image.width + x) * 3;
            (0..3).all(|k| image.rgb[i + k].abs_diff(c[k]) <= tol)
        })
        .count()
}

#[test]
fn metrics_plots_have_a_title_axes_and_a_legend() {
    let dir = scratch("metrics");
    let metrics: Vec<IterationMetrics> = (1..=5)
        .map(|step| IterationMetrics {
            step,
            reward_mean: step as f64 * 0.1,
            divergence_mean: if step == 3 {
                f64::NAN
            } else {
                0.01 * step as f64
            },
            seconds: 0.5,
            ..IterationMetrics::default()
        })
        .collect();
    let written = metrics_plots(&dir, "toy run", &metrics).unwrap();
    assert_eq!(written.len(), 4);
    for p in &written {
        let image = read(p);
        assert_eq!((image.width, image.height), (900, 500), "{}", p.display());
        let (w, h) = (image.width, image.height);
        // title text (dark anti-aliased glyphs) in the top band, tick labels left of the plot
        // and under it, the legend's red line and its name at the right
        assert!(
            count(&image, 0..40, 0..w, [0, 0, 0], 90) > 50,
            "{}: no title",
            p.display()
        );
        assert!(
            count(&image, 40..h - 60, 0..60, [0, 0, 0], 90) > 50,
            "{}: no y ticks",
            p.display()
        );
        assert!(
            count(&image, h - 50..h, 0..w, [0, 0, 0], 90) > 50,
            "{}: no x labels",
            p.display()
        );
        let legend = w - 200..w;
        assert!(
            count(&image, 50..80, legend.clone(), COLOURS[0].0, 10) > 20,
            "{}",
            p.display()
        );
        assert!(
            count(&image, 50..80, legend, [0, 0, 0], 90) > 20,
            "{}: no run name",
            p.display()
        );
    }
    metrics_plots(&dir, "empty", &[]).unwrap(); // axes only, no panic
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn symlog_curves_and_scatter_write_pngs() {
    let dir = scratch("curves");
    let runs = [
        Series::new(
            "diverges",
            (0..20).map(|i| (i as f64, -(i * i * i) as f64)).collect(),
        ),
        Series::new(
            "stable",
            (0..20).map(|i| (i as f64, 0.1 * i as f64)).collect(),
        ),
        Series::new("one point", vec![(3.0, 2.0)]),
    ];
    let chart = Chart::new("true objective", "iteration", "objective (symlog)").symlog();
    curves(&dir.join("c.png"), &chart, &runs).unwrap();
    let image = read(&dir.join("c.png"));
    for (run, (rgb, _)) in runs.iter().zip(COLOURS) {
        let drawn = count(&image, 0..500, 0..700, rgb, 10);
        assert!(drawn > 10, "{} not drawn", run.name);
    }
    curves(&dir.join("none.png"), &chart, &[]).unwrap();
    let samples: Vec<[f32; 2]> = (0..200)
        .map(|i| [i as f32 / 40.0, (i % 7) as f32 - 3.0])
        .collect();
    let chart = Chart::new("samples", "x", "y");
    let modes = [(0.0, 0.0), (4.0, 2.0)].into_iter();
    scatter(
        &dir.join("s.png"),
        &chart,
        (-4.0..8.0, -4.0..4.0),
        ("samples", &samples),
        modes,
    )
    .unwrap();
    let image = read(&dir.join("s.png"));
    assert!(
        count(&image, 0..500, 0..700, COLOURS[0].0, 10) > 20,
        "no mode crosses"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn tick_labels_are_compact() {
    assert_eq!(tick(0.0), "0");
    assert_eq!(tick(-500.0), "-500");
    assert_eq!(tick(0.25), "0.25");
    assert_eq!(tick(2.0), "2");
    assert_eq!(tick(150000.0), "1.5e5");
}
